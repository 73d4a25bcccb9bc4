"""TLS and mTLS (server/tls.py) with throwaway certificates from scripts/dev_secrets.py, and the
plaintext health-only port next to a TLS gRPC port."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from activekd.server.auth import parse_tokens
from activekd.server.tls import server_credentials
from activekd.v1 import experiment_pb2, experiment_pb2_grpc
from tests.tls_certs import (
    InProcessServer,
    dev_secrets_module,
    server_config,
    token_of,
    write_dev_secrets,
)

pytest.importorskip("cryptography")


@pytest.fixture(scope="module")
def secrets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_dev_secrets(tmp_path_factory.mktemp("secrets") / "dev")


def _call(
    target: str,
    secrets: dict[str, Path],
    *,
    ca: bool = True,
    client_cert: bool = False,
    plaintext: bool = False,
) -> grpc.StatusCode:
    token = token_of(secrets, "reader")
    if plaintext:
        channel = grpc.insecure_channel(target)
    else:
        creds = grpc.ssl_channel_credentials(
            root_certificates=secrets["ca.crt"].read_bytes() if ca else None,
            private_key=secrets["client.key"].read_bytes() if client_cert else None,
            certificate_chain=secrets["client.crt"].read_bytes() if client_cert else None,
        )
        call = grpc.access_token_call_credentials(token)
        channel = grpc.secure_channel(target, grpc.composite_channel_credentials(creds, call))
    with channel:
        stub = experiment_pb2_grpc.ExperimentServiceStub(channel)
        try:
            stub.GetExperiment(
                experiment_pb2.GetExperimentRequest(experiment_id="e1"),
                metadata=(("authorization", f"Bearer {token}"),) if plaintext else None,
                timeout=5,
            )
        except grpc.RpcError as exc:
            return exc.code()  # type: ignore[attr-defined,no-any-return]
    return grpc.StatusCode.OK


def _settings(secrets: dict[str, Path], **extra: str | int) -> dict[str, str | int]:
    return {
        "auth_tokens_file": str(secrets["tokens"]),
        "tls_cert_file": str(secrets["server.crt"]),
        "tls_key_file": str(secrets["server.key"]),
        **extra,
    }


@pytest.fixture(scope="module")
def tls_server(secrets: dict[str, Path]) -> Iterator[InProcessServer]:
    with InProcessServer(server_config(**_settings(secrets, health_port=0))) as srv:
        yield srv


def test_dev_secrets_files(secrets: dict[str, Path]) -> None:
    for name, path in secrets.items():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, name
    assert stat.S_IMODE(os.stat(secrets["ca.crt"].parent).st_mode) == 0o700
    roles = sorted(
        (name, role.label)
        for role, name in parse_tokens(secrets["tokens"].read_text(), "t").values()
    )
    assert roles == [
        ("admin", "admin"),
        ("annotation", "writer"),
        ("experiment", "writer"),
        ("reader", "reader"),
        ("writer", "writer"),
    ]
    assert len(secrets["redis.password"].read_text().strip()) >= 24
    with pytest.raises(FileExistsError):
        write_dev_secrets(secrets["ca.crt"].parent)


def test_dev_secrets_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cryptography import x509

    main = dev_secrets_module().main
    out = tmp_path / "s"
    assert main([str(out), "--host", "svc.example", "--host", "10.0.0.7"]) == 0
    cert = x509.load_pem_x509_certificate((out / "server.crt").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["svc.example"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["10.0.0.7"]
    before = (out / "tokens").read_text()
    assert main([str(out)]) == 1  # never replaces secrets silently
    assert "--force" in capsys.readouterr().err
    assert (out / "tokens").read_text() == before
    assert (out / "label-studio.api-key").read_text() == ""  # for the user's Label Studio key
    (out / "label-studio.api-key").write_text("a-label-studio-key\n")
    assert main([str(out), "--force"]) == 0
    assert (out / "tokens").read_text() != before
    assert (out / "label-studio.api-key").read_text() == "a-label-studio-key\n", "never replaced"


def test_tls_works_with_the_ca_and_fails_without(
    tls_server: InProcessServer, secrets: dict[str, Path]
) -> None:
    assert _call(tls_server.target, secrets) == grpc.StatusCode.OK
    assert _call(f"localhost:{tls_server.port}", secrets) == grpc.StatusCode.OK
    assert _call(tls_server.target, secrets, ca=False) == grpc.StatusCode.UNAVAILABLE
    assert _call(tls_server.target, secrets, plaintext=True) == grpc.StatusCode.UNAVAILABLE


def test_health_port_answers_plaintext_while_the_grpc_port_is_tls(
    tls_server: InProcessServer,
) -> None:
    with grpc.insecure_channel(tls_server.health_target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for name in ("", "activekd.v1.ExperimentService", "activekd.liveness"):
            reply = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING, name
        # the health port serves health only
        stub = experiment_pb2_grpc.ExperimentServiceStub(channel)
        with pytest.raises(grpc.RpcError) as exc:
            stub.GetExperiment(experiment_pb2.GetExperimentRequest(), timeout=5)
        assert exc.value.code() == grpc.StatusCode.UNIMPLEMENTED  # type: ignore[attr-defined]


def test_mtls_refuses_a_client_without_a_certificate(secrets: dict[str, Path]) -> None:
    config = server_config(**_settings(secrets, tls_client_ca_file=str(secrets["ca.crt"])))
    with InProcessServer(config) as srv:
        assert _call(srv.target, secrets) == grpc.StatusCode.UNAVAILABLE
        assert _call(srv.target, secrets, client_cert=True) == grpc.StatusCode.OK


def test_tls_settings_that_cannot_work_stop_the_start(
    secrets: dict[str, Path], tmp_path: Path
) -> None:
    assert server_credentials(server_config()) is None
    with pytest.raises(SystemExit, match="set both"):
        server_credentials(server_config(tls_cert_file=str(secrets["server.crt"])))
    with pytest.raises(SystemExit, match="ACTIVEKD_TLS_CLIENT_CA_FILE needs"):
        server_credentials(server_config(tls_client_ca_file=str(secrets["ca.crt"])))
    with pytest.raises(SystemExit, match="cannot read ACTIVEKD_TLS_KEY_FILE"):
        server_credentials(server_config(**_settings(secrets, tls_key_file=str(tmp_path / "x"))))
    (tmp_path / "junk").write_text("not a certificate")
    with pytest.raises(SystemExit, match="not a PEM file"):
        server_credentials(
            server_config(**_settings(secrets, tls_cert_file=str(tmp_path / "junk")))
        )
