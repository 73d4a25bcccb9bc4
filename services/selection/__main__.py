"""``python -m activekd_services.selection``: serve SelectionService."""

from __future__ import annotations

import logging
import sys
import threading

import faiss
from activekd_services.selection.servicer import SelectionServicer

from activekd.distributed.pool_select import ShardedSelector
from activekd.selection import warm_up_kernels
from activekd.server.bootstrap import Service, grpc_service, run
from activekd.server.config import ServerConfig
from activekd.server.stores import open_pool_store
from activekd.state.redis_conn import connect
from activekd.state.selections import SelectionLog
from activekd.v1 import selection_pb2, selection_pb2_grpc

log = logging.getLogger("activekd.selection.service")


def _warm_up() -> None:
    """The k-center int8 screen's kernels, loaded off the serving path (numba: ~0.5 s cached)."""
    seconds = warm_up_kernels()
    if seconds:
        log.info("int8 greedy screen ready", extra={"seconds": round(seconds, 2)})


async def build(config: ServerConfig) -> Service:
    client = connect(config.redis_url)
    client.ping()
    if config.threads > 0:
        faiss.omp_set_num_threads(config.threads)
    sharded = None
    if config.ray_address:  # pcoreset/coreset over sharded pools in Ray actors
        sharded = ShardedSelector(config.ray_address, cpus_per_shard=config.ray_cpus_per_shard)
        sharded.connect()
        log.info(
            "k-center over sharded pools runs on Ray",
            extra={"ray_address": config.ray_address.split("@")[-1]},
        )
    threading.Thread(target=_warm_up, name="akd-int8-warm-up", daemon=True).start()
    store = open_pool_store(config, client)
    servicer = SelectionServicer(store, SelectionLog(client), config, sharded)

    async def close() -> None:
        if sharded is not None:
            sharded.close()
        client.close()

    return grpc_service(
        selection_pb2,
        "SelectionService",
        selection_pb2_grpc.add_SelectionServiceServicer_to_server,
        servicer,
        close,
    )


if __name__ == "__main__":
    sys.exit(run("selection", build))
