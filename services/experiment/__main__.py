"""``python -m activekd_services.experiment``: serve ExperimentService (the round coordinator)."""

from __future__ import annotations

import sys

from activekd_services.experiment.servicer import ExperimentServicer

from activekd.orchestration.driver import Driver, ServiceTargets
from activekd.server.bootstrap import Service, grpc_service, run
from activekd.server.config import ServerConfig
from activekd.state.experiments import ExperimentStore
from activekd.state.redis_conn import connect
from activekd.store import PoolStore
from activekd.v1 import experiment_pb2, experiment_pb2_grpc

TARGET_KEYS = ("selection_target", "teacher_target", "trainer_target")


async def build(config: ServerConfig) -> Service:
    client = connect(config.redis_url)
    client.ping()
    targets = ServiceTargets(
        selection=config.extra.get("selection_target", "localhost:50051"),
        teacher=config.extra.get("teacher_target", "localhost:50052"),
        trainer=config.extra.get("trainer_target", "localhost:50053"),
    )
    store = ExperimentStore(client)
    driver = Driver(store, PoolStore(config.store_uri, client), targets)
    servicer = ExperimentServicer(store, driver)

    async def close() -> None:
        servicer.shutdown()
        driver.close()
        client.close()

    return grpc_service(
        experiment_pb2,
        "ExperimentService",
        experiment_pb2_grpc.add_ExperimentServiceServicer_to_server,
        servicer,
        close,
    )


if __name__ == "__main__":
    sys.exit(run("experiment", build, extra_keys=TARGET_KEYS))
