"""Client credentials (activekd.wire.channel): the settings they read, the bearer token every kind
of call carries on plaintext and TLS channels, and a token file re-read when it changes.

The server here is an in-process grpc server whose four methods (one per RPC kind) answer with the
``authorization`` metadata they received.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest

from activekd.v1 import experiment_pb2, experiment_pb2_grpc
from activekd.wire.channel import (
    CLIENT_ENV,
    BaseClient,
    ClientCredentials,
    CredentialsError,
    bearer_metadata,
    make_channel,
)

TOKEN = "tok-" + "a" * 28
OTHER = "tok-" + "b" * 28
SERVICE = "akdtest.Echo"


def _auth(context: grpc.ServicerContext) -> bytes:
    values = [v for k, v in context.invocation_metadata() if k == "authorization"]
    return ("|".join(values) if values else "<none>").encode()


def _handler() -> grpc.GenericRpcHandler:
    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Unary": grpc.unary_unary_rpc_method_handler(lambda req, ctx: _auth(ctx)),
            "ServerStream": grpc.unary_stream_rpc_method_handler(
                lambda req, ctx: iter([_auth(ctx)])
            ),
            "ClientStream": grpc.stream_unary_rpc_method_handler(
                lambda reqs, ctx: (list(reqs), _auth(ctx))[1]
            ),
            "Bidi": grpc.stream_stream_rpc_method_handler(
                lambda reqs, ctx: (_auth(ctx) for _ in reqs)
            ),
        },
    )


def _serve(server_credentials: Any = None) -> tuple[grpc.Server, str]:
    server = grpc.server(futures.ThreadPoolExecutor(4))
    server.add_generic_rpc_handlers((_handler(),))
    if server_credentials is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        port = server.add_secure_port("127.0.0.1:0", server_credentials)
    server.start()
    return server, f"127.0.0.1:{port}"


@pytest.fixture(scope="module")
def plain() -> Iterator[str]:
    server, target = _serve()
    try:
        yield target
    finally:
        server.stop(0)


def _calls(channel: grpc.Channel, **kw: Any) -> dict[str, str]:
    """What the server saw as ``authorization`` for each of the four kinds of call."""
    m = f"/{SERVICE}/"
    return {
        "unary": channel.unary_unary(m + "Unary")(b"x", timeout=5, **kw).decode(),
        "server_stream": next(
            iter(channel.unary_stream(m + "ServerStream")(b"x", timeout=5, **kw))
        ).decode(),
        "client_stream": channel.stream_unary(m + "ClientStream")(
            iter([b"x"]), timeout=5, **kw
        ).decode(),
        "bidi": next(
            iter(channel.stream_stream(m + "Bidi")(iter([b"x"]), timeout=5, **kw))
        ).decode(),
    }


# ---------------------------------------------------------------------------------- settings
def test_from_env_reads_every_client_setting() -> None:
    env = {
        "ACTIVEKD_CLIENT_TOKEN": f" {TOKEN}\n",
        "ACTIVEKD_CLIENT_TOKEN_FILE": "/run/secrets/experiment.token",
        "ACTIVEKD_CLIENT_CA_FILE": "/run/secrets/ca.crt",
        "ACTIVEKD_CLIENT_CERT_FILE": "/run/secrets/client.crt",
        "ACTIVEKD_CLIENT_KEY_FILE": "/run/secrets/client.key",
        "ACTIVEKD_CLIENT_TLS_SERVER_NAME": "selection",
        "ACTIVEKD_AUTH_TOKENS": "admin:not-a-client-setting-at-all",
    }
    creds = ClientCredentials.from_env(env)
    assert creds == ClientCredentials(
        token=TOKEN,
        token_file="/run/secrets/experiment.token",
        ca_file="/run/secrets/ca.crt",
        cert_file="/run/secrets/client.crt",
        key_file="/run/secrets/client.key",
        server_name="selection",
    )
    assert creds.tls
    assert sorted(CLIENT_ENV.values()) == sorted(k for k in env if "CLIENT" in k)
    assert ClientCredentials.from_env({}) == ClientCredentials()
    assert not ClientCredentials.from_env({"ACTIVEKD_CLIENT_TOKEN": TOKEN}).tls
    assert ClientCredentials(cert_file="c", key_file="k").tls


def test_the_token_never_shows_in_repr() -> None:
    text = repr(ClientCredentials(token=TOKEN, ca_file="ca.crt"))
    assert TOKEN not in text and "***" in text and "ca.crt" in text


def test_bearer_metadata_is_the_authorization_header() -> None:
    assert bearer_metadata(TOKEN) == (("authorization", f"Bearer {TOKEN}"),)


def test_a_bad_token_or_missing_token_file_fails_when_the_channel_is_made(tmp_path: Path) -> None:
    with pytest.raises(CredentialsError, match="not a token"):
        make_channel("127.0.0.1:1", credentials=ClientCredentials(token="has spaces in it ok"))
    missing = tmp_path / "secret-dir" / "missing.token"
    with pytest.raises(CredentialsError, match=r"missing\.token") as info:
        make_channel("127.0.0.1:1", credentials=ClientCredentials(token_file=str(missing)))
    assert str(tmp_path) not in str(info.value)  # the file's name, not where it lives
    server_line = tmp_path / "tokens"
    server_line.write_text(f"writer:{TOKEN}:experiment\n")
    with pytest.raises(CredentialsError, match="bare token, not a server's role:token line"):
        make_channel("127.0.0.1:1", credentials=ClientCredentials(token_file=str(server_line)))
    two = tmp_path / "two.token"
    two.write_text(f"{TOKEN}\n{OTHER}\n")
    with pytest.raises(CredentialsError, match="not a token"):
        make_channel("127.0.0.1:1", credentials=ClientCredentials(token_file=str(two)))


# ---------------------------------------------------------------------------------- plaintext
def test_plaintext_calls_of_every_kind_carry_the_token(plain: str) -> None:
    with make_channel(plain, credentials=ClientCredentials(token=TOKEN)) as channel:
        assert set(_calls(channel).values()) == {f"Bearer {TOKEN}"}


def test_no_token_sends_no_authorization(plain: str) -> None:
    with make_channel(plain, credentials=ClientCredentials()) as channel:
        assert set(_calls(channel).values()) == {"<none>"}


def test_a_token_given_for_one_call_wins_over_the_channels(plain: str) -> None:
    with make_channel(plain, credentials=ClientCredentials(token=TOKEN)) as channel:
        seen = _calls(channel, metadata=bearer_metadata(OTHER))
    assert set(seen.values()) == {f"Bearer {OTHER}"}


def test_clients_read_the_environment_by_default(
    plain: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in CLIENT_ENV.values():
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("ACTIVEKD_CLIENT_TOKEN", OTHER)
    with BaseClient(plain) as client:
        assert _calls(client.channel)["unary"] == f"Bearer {OTHER}"
    with BaseClient(plain, credentials=ClientCredentials(token=TOKEN)) as client:
        assert _calls(client.channel)["unary"] == f"Bearer {TOKEN}"
    with make_channel(plain) as channel:
        assert _calls(channel)["bidi"] == f"Bearer {OTHER}"


def _rotate(path: Path, token: str) -> None:
    """Replace the file the way a k8s Secret update does: a new file renamed over the old."""
    tmp = path.with_suffix(".new")
    tmp.write_text(token + "\n")
    os.replace(tmp, path)


def test_a_token_file_is_read_again_when_it_changes(plain: str, tmp_path: Path) -> None:
    path = tmp_path / "client.token"
    path.write_text(f"# the experiment service's token\n{TOKEN}\n")
    with make_channel(plain, credentials=ClientCredentials(token_file=str(path))) as channel:
        assert set(_calls(channel).values()) == {f"Bearer {TOKEN}"}
        _rotate(path, OTHER)
        assert set(_calls(channel).values()) == {f"Bearer {OTHER}"}
        path.write_text("")  # half-written: the last good token is kept
        assert _calls(channel)["unary"] == f"Bearer {OTHER}"
        path.unlink()  # gone for a moment during a rotation: the same
        assert _calls(channel)["unary"] == f"Bearer {OTHER}"


# ---------------------------------------------------------------------------------- TLS
def _certs(tmp_path: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate (needs cryptography)."""
    from tests.tls_certs import write_dev_secrets

    return write_dev_secrets(tmp_path / "secrets")


def _server_creds(certs: dict[str, Path], mutual: bool = False) -> Any:
    return grpc.ssl_server_credentials(
        [(certs["server.key"].read_bytes(), certs["server.crt"].read_bytes())],
        root_certificates=certs["ca.crt"].read_bytes() if mutual else None,
        require_client_auth=mutual,
    )


def test_tls_calls_carry_the_token_as_call_credentials(tmp_path: Path) -> None:
    certs = _certs(tmp_path)
    server, target = _serve(_server_creds(certs))
    try:
        ca = str(certs["ca.crt"])
        with make_channel(target, credentials=ClientCredentials(token=TOKEN, ca_file=ca)) as ch:
            assert set(_calls(ch).values()) == {f"Bearer {TOKEN}"}
        path = tmp_path / "client.token"
        path.write_text(TOKEN + "\n")
        creds = ClientCredentials(token_file=str(path), ca_file=ca)
        with make_channel(target, credentials=creds) as ch:
            assert set(_calls(ch).values()) == {f"Bearer {TOKEN}"}
            _rotate(path, OTHER)
            assert set(_calls(ch).values()) == {f"Bearer {OTHER}"}
        with make_channel(target, credentials=ClientCredentials(token=TOKEN)) as ch:
            with pytest.raises(grpc.RpcError) as info:  # plaintext to a TLS port
                _calls(ch)
            assert info.value.code() is grpc.StatusCode.UNAVAILABLE
    finally:
        server.stop(0)


def test_mutual_tls_sends_the_client_certificate(tmp_path: Path) -> None:
    certs = _certs(tmp_path)
    server, target = _serve(_server_creds(certs, mutual=True))
    try:
        ca = str(certs["ca.crt"])
        creds = ClientCredentials(
            token=TOKEN,
            ca_file=ca,
            cert_file=str(certs["client.crt"]),
            key_file=str(certs["client.key"]),
        )
        with make_channel(target, credentials=creds) as ch:
            assert _calls(ch)["unary"] == f"Bearer {TOKEN}"
        with make_channel(target, credentials=ClientCredentials(token=TOKEN, ca_file=ca)) as ch:
            with pytest.raises(grpc.RpcError) as info:
                _calls(ch)
            assert info.value.code() is grpc.StatusCode.UNAVAILABLE
    finally:
        server.stop(0)


def test_a_certificate_without_its_key_is_an_error() -> None:
    with pytest.raises(CredentialsError, match="both"):
        make_channel("127.0.0.1:1", credentials=ClientCredentials(cert_file="client.crt"))


def test_a_closed_channel_with_a_token_refuses_calls_without_crashing(plain: str) -> None:
    """grpc crashes the process on an intercepted call over a closed channel; ours raises."""
    channel = make_channel(plain, credentials=ClientCredentials(token=TOKEN))
    unary = channel.unary_unary(f"/{SERVICE}/Unary", _registered_method=True)
    channel.close()
    with pytest.raises(ValueError, match="closed channel"):
        unary(b"x", timeout=5)
    with pytest.raises(ValueError, match="closed channel"):
        _calls(channel)


# ---------------------------------------------------------------------------------- the CLI
class _Experiments(experiment_pb2_grpc.ExperimentServiceServicer):
    def __init__(self) -> None:
        self.seen: list[str] = []

    def ListExperiments(self, request: Any, context: grpc.ServicerContext) -> Any:
        auth = dict(context.invocation_metadata()).get("authorization", "")
        if not auth:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid bearer token")
        self.seen.append(auth)
        return experiment_pb2.ListExperimentsResponse()


def test_cli_status_sends_the_token_of_token_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from activekd.cli import main

    monkeypatch.setenv("ACTIVEKD_CLIENT_TOKEN", OTHER)
    fake = _Experiments()
    server = grpc.server(futures.ThreadPoolExecutor(2))
    experiment_pb2_grpc.add_ExperimentServiceServicer_to_server(fake, server)
    target = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
    server.start()
    try:
        path = tmp_path / "reader.token"
        path.write_text(TOKEN + "\n")
        assert main(["status", "--target", target, "--token-file", str(path)]) == 0
        assert main(["status", "--target", target]) == 0  # the environment's
        assert fake.seen == [f"Bearer {TOKEN}", f"Bearer {OTHER}"]
        capsys.readouterr()
        assert main(["status", "--target", target, "--token-file", str(tmp_path / "no")]) == 2
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert line.startswith("activekd status: cannot read the token file 'no'"), line
        monkeypatch.delenv("ACTIVEKD_CLIENT_TOKEN")
        monkeypatch.delenv("ACTIVEKD_CLIENT_TOKEN_FILE", raising=False)
        assert main(["status", "--target", target]) == 1
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert line == (
            "activekd status: UNAUTHENTICATED: missing or invalid bearer token "
            "(give --token-file FILE, or set ACTIVEKD_CLIENT_TOKEN_FILE)"
        ), line
    finally:
        server.stop(0)
