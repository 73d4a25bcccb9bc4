"""TLS and optional mTLS for a service's gRPC port, from PEM files (mounted Secrets).

- ``ACTIVEKD_TLS_CERT_FILE`` + ``ACTIVEKD_TLS_KEY_FILE``: serve TLS (the chain, then the key);
- ``ACTIVEKD_TLS_CLIENT_CA_FILE``: also require a client certificate signed by that CA (mTLS).

The files are read once at start: rotating a certificate is a restart. A renewed Secret rolls no
pod by itself: restart the pods (``kubectl rollout restart``) or use a controller such as Reloader
(docs/security.md). The plaintext health-only port (``ACTIVEKD_HEALTH_PORT``) is what probes use
when the main port is TLS.
"""

from __future__ import annotations

from pathlib import Path

import grpc

from activekd.server.config import ServerConfig


def _read_pem(path: str, setting: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise SystemExit(
            f"cannot read {setting} ({Path(path).name}): {exc.strerror or type(exc).__name__}"
        ) from exc
    if b"-----BEGIN " not in data:
        raise SystemExit(f"{setting} ({Path(path).name}) is not a PEM file")
    return data


def tls_mode(config: ServerConfig) -> str:
    """``"plaintext"``, ``"tls"`` or ``"mtls"``: what :func:`server_credentials` will serve."""
    if not (config.tls_cert_file or config.tls_key_file):
        return "plaintext"
    return "mtls" if config.tls_client_ca_file else "tls"


def server_credentials(config: ServerConfig) -> grpc.ServerCredentials | None:
    """Server credentials for ``config``'s TLS files, or None when no certificate is set.

    Raises ``SystemExit`` (one line naming the setting) when only one of cert/key is set, a
    client CA is set without a certificate, or a file cannot be read or is not PEM.
    """
    cert, key, ca = config.tls_cert_file, config.tls_key_file, config.tls_client_ca_file
    if not cert and not key:
        if ca:
            raise SystemExit(
                "ACTIVEKD_TLS_CLIENT_CA_FILE needs ACTIVEKD_TLS_CERT_FILE and ACTIVEKD_TLS_KEY_FILE"
            )
        return None
    if not (cert and key):
        raise SystemExit("set both ACTIVEKD_TLS_CERT_FILE and ACTIVEKD_TLS_KEY_FILE (or neither)")
    chain = _read_pem(cert, "ACTIVEKD_TLS_CERT_FILE")
    private_key = _read_pem(key, "ACTIVEKD_TLS_KEY_FILE")
    client_ca = _read_pem(ca, "ACTIVEKD_TLS_CLIENT_CA_FILE") if ca else None
    return grpc.ssl_server_credentials(
        [(private_key, chain)],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


__all__ = ["server_credentials", "tls_mode"]
