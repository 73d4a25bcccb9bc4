"""Container health probe: ``python -m activekd.server.healthcheck [--port N] [--service NAME]``.

Calls ``grpc.health.v1.Health/Check`` (plaintext) on the local server and exits 0 when the
answer is SERVING, 1 for any other status (NOT_SERVING while Redis is unreachable or during
graceful shutdown, SERVICE_UNKNOWN...), 2 when the server cannot be reached or asked. The port
defaults to ``$ACTIVEKD_HEALTH_PORT`` (the plaintext health-only port, needed when the gRPC port
is TLS) when set, else ``$ACTIVEKD_GRPC_PORT``, so one Dockerfile HEALTHCHECK serves every
service. ``--liveness`` asks the liveness service (SERVING until shutdown, whatever Redis does);
the default ``""`` is readiness.
"""

from __future__ import annotations

import argparse
import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

EXIT_SERVING, EXIT_NOT_SERVING, EXIT_UNREACHABLE = 0, 1, 2
#: The health service name of liveness: SERVING from start until shutdown. ``""`` and each full
#: service name are readiness (NOT_SERVING while the state store is unreachable).
LIVENESS_SERVICE = "activekd.liveness"


def default_port() -> int | None:
    """``$ACTIVEKD_HEALTH_PORT`` when it is a fixed port, else ``$ACTIVEKD_GRPC_PORT`` when it is
    one, else None (0 means "pick a free port", which cannot be probed)."""
    for name in ("ACTIVEKD_HEALTH_PORT", "ACTIVEKD_GRPC_PORT"):
        raw = os.environ.get(name, "").strip()
        if raw.isdigit() and int(raw) > 0:
            return int(raw)
    return None


def check(target: str, service: str = "", timeout: float = 3.0) -> str:
    """The health status name (e.g. "SERVING") that ``target`` reports for ``service``.

    Raises ``grpc.RpcError`` when the server cannot be reached within ``timeout`` seconds.
    """
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def main(argv: list[str] | None = None) -> int:
    """Parse flags, probe, print one line, return the exit code."""
    parser = argparse.ArgumentParser(prog="activekd-healthcheck", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="server address (default 127.0.0.1)")
    parser.add_argument(
        "--port",
        type=int,
        default=None,
        help="port (default: $ACTIVEKD_HEALTH_PORT if set, else $ACTIVEKD_GRPC_PORT)",
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--service", default="", help='full gRPC service name; "" (default) = overall readiness'
    )
    which.add_argument(
        "--liveness",
        action="store_true",
        help=f"ask liveness ({LIVENESS_SERVICE}) instead of readiness",
    )
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds (default 3)")
    args = parser.parse_args(argv)
    port = args.port if args.port is not None else default_port()
    if port is None:
        print(
            "healthcheck: pass --port or set ACTIVEKD_HEALTH_PORT or ACTIVEKD_GRPC_PORT "
            "to a fixed port",
            file=sys.stderr,
        )
        return EXIT_UNREACHABLE
    service = LIVENESS_SERVICE if args.liveness else args.service
    host = f"[{args.host}]" if ":" in args.host and not args.host.startswith("[") else args.host
    target = f"{host}:{port}"
    try:
        status = check(target, service, args.timeout)
    except grpc.RpcError as exc:
        code = exc.code() if isinstance(exc, grpc.Call) else None
        name = code.name if code is not None else type(exc).__name__
        print(f"healthcheck: {target} {service or '(overall)'}: {name}", file=sys.stderr)
        return EXIT_NOT_SERVING if name == "NOT_FOUND" else EXIT_UNREACHABLE
    print(f"healthcheck: {target} {service or '(overall)'}: {status}")
    return EXIT_SERVING if status == "SERVING" else EXIT_NOT_SERVING


if __name__ == "__main__":
    sys.exit(main())
