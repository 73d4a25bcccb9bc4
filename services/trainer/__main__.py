"""``python -m activekd_services.trainer``: serve TrainerService.

Service-specific settings (env ``ACTIVEKD_<NAME>`` or ``--<name>``): ``checkpoint_dir`` (default
``<store_uri>/checkpoints``) and ``checkpoint_chunk_bytes`` (GetCheckpoint chunk size, 1 MiB).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from activekd_services.trainer.servicer import DEFAULT_CHUNK_BYTES, TrainerServicer

from activekd.server.bootstrap import Service, grpc_service, run
from activekd.server.config import ServerConfig
from activekd.server.stores import open_pool_store
from activekd.state.experiments import ExperimentStore
from activekd.state.redis_conn import connect
from activekd.student.round_job import RoundTrainer
from activekd.teacher.sources import SourcePolicy
from activekd.v1 import trainer_pb2, trainer_pb2_grpc

EXTRA_KEYS = ("checkpoint_dir", "checkpoint_chunk_bytes")
STALE_TEMP_SECONDS = 300.0


async def build(config: ServerConfig) -> Service:
    client = connect(config.redis_url)
    client.ping()
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    store = open_pool_store(config, client)
    ckpt_dir = config.extra.get("checkpoint_dir") or str(store.root / "checkpoints")
    try:
        chunk = int(config.extra.get("checkpoint_chunk_bytes") or DEFAULT_CHUNK_BYTES)
    except ValueError as exc:
        raise SystemExit(f"ACTIVEKD_CHECKPOINT_CHUNK_BYTES is not an integer: {exc}") from exc
    trainer = RoundTrainer(
        store, ExperimentStore(client), Path(ckpt_dir), device=config.device,
        threads=config.threads,
        # a weights_path in a spec or request is a host path: the teacher's data-root rule
        check_path=SourcePolicy.from_settings(store.root, config.data_roots).local_path,
    )  # fmt: skip
    # temp files of saves interrupted by a crash (younger ones may belong to a live replica)
    trainer.checkpoints.clean_temp_files(older_than=STALE_TEMP_SECONDS)
    servicer = TrainerServicer(trainer, chunk_bytes=chunk)

    async def close() -> None:
        client.close()

    return grpc_service(
        trainer_pb2,
        "TrainerService",
        trainer_pb2_grpc.add_TrainerServiceServicer_to_server,
        servicer,
        close,
    )


if __name__ == "__main__":
    sys.exit(run("trainer", build, extra_keys=EXTRA_KEYS))
