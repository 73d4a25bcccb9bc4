"""Container health probe: ``python -m activekd.server.healthcheck [--port N] [--service NAME]``.

Calls ``grpc.health.v1.Health/Check`` on the local server and exits 0 when the answer is
SERVING, 1 for any other status (NOT_SERVING during graceful shutdown, SERVICE_UNKNOWN...),
2 when the server cannot be reached or asked. The port defaults to ``$ACTIVEKD_GRPC_PORT`` so one
Dockerfile HEALTHCHECK serves every service.
"""

from __future__ import annotations

import argparse
import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

EXIT_SERVING, EXIT_NOT_SERVING, EXIT_UNREACHABLE = 0, 1, 2


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
        help="gRPC port (default: $ACTIVEKD_GRPC_PORT)",
    )
    parser.add_argument(
        "--service", default="", help='full gRPC service name; "" (default) = overall health'
    )
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds (default 3)")
    args = parser.parse_args(argv)
    port = args.port
    if port is None:
        raw = os.environ.get("ACTIVEKD_GRPC_PORT", "")
        if not raw.isdigit() or int(raw) == 0:
            print(
                "healthcheck: pass --port or set ACTIVEKD_GRPC_PORT to a fixed port",
                file=sys.stderr,
            )
            return EXIT_UNREACHABLE
        port = int(raw)
    host = f"[{args.host}]" if ":" in args.host and not args.host.startswith("[") else args.host
    target = f"{host}:{port}"
    try:
        status = check(target, args.service, args.timeout)
    except grpc.RpcError as exc:
        code = exc.code() if isinstance(exc, grpc.Call) else None
        name = code.name if code is not None else type(exc).__name__
        print(f"healthcheck: {target} {args.service or '(overall)'}: {name}", file=sys.stderr)
        return EXIT_NOT_SERVING if name == "NOT_FOUND" else EXIT_UNREACHABLE
    print(f"healthcheck: {target} {args.service or '(overall)'}: {status}")
    return EXIT_SERVING if status == "SERVING" else EXIT_NOT_SERVING


if __name__ == "__main__":
    sys.exit(main())
