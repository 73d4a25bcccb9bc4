"""``python -m activekd_services.selection``: serve SelectionService."""

from __future__ import annotations

import sys

import faiss
from activekd_services.selection.servicer import SelectionServicer

from activekd.server.bootstrap import Service, grpc_service, run
from activekd.server.config import ServerConfig
from activekd.server.stores import open_pool_store
from activekd.state.redis_conn import connect
from activekd.state.selections import SelectionLog
from activekd.v1 import selection_pb2, selection_pb2_grpc


async def build(config: ServerConfig) -> Service:
    client = connect(config.redis_url)
    client.ping()
    if config.threads > 0:
        faiss.omp_set_num_threads(config.threads)
    servicer = SelectionServicer(open_pool_store(config, client), SelectionLog(client), config)

    async def close() -> None:
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
