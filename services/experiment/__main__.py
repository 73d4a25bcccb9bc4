"""``python -m activekd_services.experiment``: serve ExperimentService (the round coordinator)."""

from __future__ import annotations

import logging
import sys

from activekd_services.experiment.servicer import ExperimentServicer

from activekd.orchestration.driver import Driver, ServiceTargets
from activekd.server.bootstrap import Service, grpc_service, run
from activekd.server.config import ServerConfig
from activekd.server.stores import open_pool_store
from activekd.state.experiments import ExperimentStore
from activekd.state.redis_conn import connect
from activekd.v1 import experiment_pb2, experiment_pb2_grpc
from activekd.wire.channel import ClientCredentials

TARGET_KEYS = ("selection_target", "teacher_target", "trainer_target")
log = logging.getLogger("activekd.experiment")


def client_credentials() -> ClientCredentials:
    """This service's own credentials for its calls to the others (``ACTIVEKD_CLIENT_*``: a
    writer token, in production from ``ACTIVEKD_CLIENT_TOKEN_FILE``), never a caller's."""
    creds = ClientCredentials.from_env()
    if not (creds.token or creds.token_file):
        log.warning(
            "no client token (ACTIVEKD_CLIENT_TOKEN_FILE): calls to services that require "
            "auth will be refused"
        )
    else:
        log.info(
            "calling the other services with a bearer token",
            extra={
                "token_from": "file" if creds.token_file and not creds.token else "env",
                "tls": creds.tls,
            },
        )
    return creds


async def build(config: ServerConfig) -> Service:
    client = connect(config.redis_url)
    client.ping()
    targets = ServiceTargets(
        selection=config.extra.get("selection_target", "localhost:50051"),
        teacher=config.extra.get("teacher_target", "localhost:50052"),
        trainer=config.extra.get("trainer_target", "localhost:50053"),
    )
    store = ExperimentStore(client)
    driver = Driver(
        store, open_pool_store(config, client), targets, credentials=client_credentials()
    )
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
