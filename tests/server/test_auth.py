"""Bearer-token authentication and roles (server/auth.py) on in-process servers, plus one real
selection service process started with explicit auth settings."""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from activekd.server import auth
from activekd.server.auth import (
    METHOD_RULES,
    UNAUTHENTICATED_MESSAGE,
    Role,
    TokenStore,
    auth_from_config,
    parse_tokens,
)
from activekd.v1 import (
    experiment_pb2,
    experiment_pb2_grpc,
    selection_pb2,
    selection_pb2_grpc,
    teacher_pb2,
    teacher_pb2_grpc,
    trainer_pb2,
)
from tests.procs import RedisProcess, ServiceProcess
from tests.tls_certs import InProcessServer, server_config

TOKENS = {
    "admin": "admin-token-0123456789",
    "writer": "writer-token-0123456789",
    "reader": "reader-token-0123456789",
}


def _tokens_text(tokens: dict[str, str]) -> str:
    return "# test tokens\n" + "".join(f"{role}:{t}:{role}-1\n" for role, t in tokens.items())


def _md(token: str | None) -> tuple[tuple[str, str], ...]:
    return () if token is None else (("authorization", f"Bearer {token}"),)


@pytest.fixture(scope="module")
def tokens_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("auth") / "tokens"
    path.write_text(_tokens_text(TOKENS))
    return path


@pytest.fixture(scope="module")
def server(tokens_file: Path) -> Iterator[InProcessServer]:
    with InProcessServer(server_config(auth_tokens_file=str(tokens_file))) as srv:
        yield srv


@pytest.fixture(scope="module")
def channel(server: InProcessServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.target) as ch:
        yield ch


def _code(fn: object, *args: object, **kwargs: object) -> tuple[grpc.StatusCode, str]:
    try:
        reply = fn(*args, **kwargs)  # type: ignore[operator]
        if hasattr(reply, "__iter__") and not hasattr(reply, "ListFields"):
            list(reply)
    except grpc.RpcError as exc:
        return exc.code(), exc.details()  # type: ignore[attr-defined]
    return grpc.StatusCode.OK, ""


def test_missing_or_wrong_token_is_unauthenticated_with_one_fixed_message(
    channel: grpc.Channel,
) -> None:
    stub = experiment_pb2_grpc.ExperimentServiceStub(channel)
    req = experiment_pb2.GetExperimentRequest(experiment_id="e1")
    for metadata in (
        _md(None),
        _md("not-a-known-token-at-all"),
        _md(TOKENS["admin"] + "x"),
        (("authorization", TOKENS["admin"]),),  # no "Bearer " scheme
        (("authorization", f"Basic {TOKENS['admin']}"),),
    ):
        code, details = _code(stub.GetExperiment, req, metadata=metadata, timeout=5)
        assert (code, details) == (grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED_MESSAGE)
    # the body of a refused call is not even parsed: garbage is UNAUTHENTICATED too
    raw = channel.unary_unary("/activekd.v1.ExperimentService/GetExperiment")
    code, details = _code(raw, b"\xff\xff\xff\xff", timeout=5)
    assert (code, details) == (grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED_MESSAGE)


def test_roles(channel: grpc.Channel) -> None:
    stub = experiment_pb2_grpc.ExperimentServiceStub(channel)
    get = experiment_pb2.GetExperimentRequest(experiment_id="e1")
    delete = experiment_pb2.DeleteExperimentRequest(experiment_id="e1")
    for role in ("reader", "writer", "admin"):
        assert _code(stub.GetExperiment, get, metadata=_md(TOKENS[role]), timeout=5)[0] == (
            grpc.StatusCode.OK
        )
    for role in ("reader", "writer"):
        code, details = _code(stub.DeleteExperiment, delete, metadata=_md(TOKENS[role]), timeout=5)
        assert code == grpc.StatusCode.PERMISSION_DENIED
        assert details == f"role {role} may not call DeleteExperiment (needs admin)"
    assert _code(stub.DeleteExperiment, delete, metadata=_md(TOKENS["admin"]), timeout=5)[0] == (
        grpc.StatusCode.OK
    )


def test_overwrite_and_force_need_admin(channel: grpc.Channel) -> None:
    selection = selection_pb2_grpc.SelectionServiceStub(channel)

    def upload(overwrite: bool) -> list[selection_pb2.UploadPoolRequest]:
        header = selection_pb2.UploadPoolHeader(pool_id="p", num_items=1, overwrite=overwrite)
        return [
            selection_pb2.UploadPoolRequest(header=header),
            selection_pb2.UploadPoolRequest(chunk=selection_pb2.UploadPoolChunk(item_ids=["a"])),
        ]

    code, details = _code(
        selection.UploadPool, iter(upload(True)), metadata=_md(TOKENS["writer"]), timeout=5
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert details == "role writer may not call UploadPool with overwrite (needs admin)"
    for role, overwrite in (("writer", False), ("admin", True)):
        got = _code(
            selection.UploadPool, iter(upload(overwrite)), metadata=_md(TOKENS[role]), timeout=5
        )
        assert got[0] == grpc.StatusCode.OK, got
    code, _ = _code(
        selection.UploadPool, iter(upload(False)), metadata=_md(TOKENS["reader"]), timeout=5
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED

    teacher = teacher_pb2_grpc.TeacherServiceStub(channel)
    forced = teacher_pb2.ScorePoolRequest(force=True)
    code, details = _code(teacher.ScorePool, forced, metadata=_md(TOKENS["writer"]), timeout=5)
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert details == "role writer may not call ScorePool with force (needs admin)"
    for role, req in (("writer", teacher_pb2.ScorePoolRequest()), ("admin", forced)):
        assert _code(teacher.ScorePool, req, metadata=_md(TOKENS[role]), timeout=5)[0] == (
            grpc.StatusCode.OK
        )
    # a bidi stream passes through for a reader
    got = _code(
        teacher.PredictStream,
        iter([teacher_pb2.PredictStreamRequest()]),
        metadata=_md(TOKENS["reader"]),
        timeout=5,
    )
    assert got[0] == grpc.StatusCode.OK


def test_health_and_reflection_are_open_by_default(channel: grpc.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    reply = health.Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    names = _reflection_services(channel, ())
    assert "activekd.v1.ExperimentService" in names


def _reflection_services(channel: grpc.Channel, metadata: tuple[tuple[str, str], ...]) -> set[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    replies = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
        metadata=metadata,
        timeout=5,
    )
    return {s.name for r in replies for s in r.list_services_response.service}


def test_reflection_auth_and_off(tokens_file: Path) -> None:
    with (
        InProcessServer(server_config(auth_tokens_file=str(tokens_file), reflection="auth")) as srv,
        grpc.insecure_channel(srv.target) as ch,
    ):
        with pytest.raises(grpc.RpcError) as exc:
            _reflection_services(ch, ())
        assert exc.value.code() == grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]
        assert "activekd.v1.SelectionService" in _reflection_services(ch, _md(TOKENS["reader"]))
        health = health_pb2_grpc.HealthStub(ch)  # health stays open
        assert health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == 1
    with (
        InProcessServer(server_config(auth_tokens_file=str(tokens_file), reflection="off")) as srv,
        grpc.insecure_channel(srv.target) as ch,
    ):
        with pytest.raises(grpc.RpcError) as exc:
            _reflection_services(ch, _md(TOKENS["admin"]))
        assert exc.value.code() == grpc.StatusCode.UNIMPLEMENTED  # type: ignore[attr-defined]


def test_rotating_the_token_file_without_restart(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    old, new = "old-token-0123456789abc", "new-token-0123456789abc"
    path.write_text(f"reader:{old}:old\n")
    with (
        InProcessServer(server_config(auth_tokens_file=str(path))) as srv,
        grpc.insecure_channel(srv.target) as ch,
    ):
        stub = experiment_pb2_grpc.ExperimentServiceStub(ch)
        req = experiment_pb2.GetExperimentRequest(experiment_id="e1")
        assert _code(stub.GetExperiment, req, metadata=_md(old), timeout=5)[0] == (
            grpc.StatusCode.OK
        )
        # the Kubernetes way: a new file renamed over the old one (new inode)
        staged = tmp_path / "tokens.new"
        staged.write_text(f"reader:{new}:new\n")
        staged.replace(path)
        rotated = time.monotonic()
        while True:
            new_ok = _code(stub.GetExperiment, req, metadata=_md(new), timeout=5)[0]
            old_code = _code(stub.GetExperiment, req, metadata=_md(old), timeout=5)[0]
            if new_ok == grpc.StatusCode.OK and old_code == grpc.StatusCode.UNAUTHENTICATED:
                break
            assert time.monotonic() - rotated < 1.5, "rotation not picked up within 1.5 s"
            time.sleep(0.05)
        # a broken file keeps the previous tokens
        path.write_text("reader:short\n")
        time.sleep(1.2)
        assert _code(stub.GetExperiment, req, metadata=_md(new), timeout=5)[0] == (
            grpc.StatusCode.OK
        )


def test_method_rules_cover_every_rpc_of_the_four_services() -> None:
    methods = {
        f"/{svc.full_name}/{m.name}"
        for module in (selection_pb2, teacher_pb2, trainer_pb2, experiment_pb2)
        for svc in module.DESCRIPTOR.services_by_name.values()
        for m in svc.methods
    }
    assert set(METHOD_RULES) == methods
    assert len(methods) == 24
    admin = {k.rsplit("/", 1)[1] for k, r in METHOD_RULES.items() if r.role == Role.ADMIN}
    assert admin == {"DeletePool", "DeleteExperiment"}
    escalating = {k.rsplit("/", 1)[1] for k, r in METHOD_RULES.items() if r.admin_if}
    assert escalating == {"UploadPool", "ScorePool"}


def test_auth_off_warns_and_required_without_tokens_refuses_to_start(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="activekd.auth"):
        assert auth_from_config(server_config(auth="off")) is None
    assert any(
        r.levelno == logging.WARNING and "ACTIVEKD_AUTH=off" in r.getMessage()
        for r in caplog.records
    )
    with pytest.raises(SystemExit) as exc:
        auth_from_config(server_config())
    message = str(exc.value)
    assert "\n" not in message
    for setting in ("ACTIVEKD_AUTH_TOKENS_FILE", "ACTIVEKD_AUTH_TOKENS", "ACTIVEKD_AUTH=off"):
        assert setting in message
    with pytest.raises(SystemExit, match="not one of: required, off"):
        auth_from_config(server_config(auth="maybe", auth_tokens=f"admin:{TOKENS['admin']}"))
    with pytest.raises(SystemExit, match="No such file"):
        auth_from_config(server_config(auth_tokens_file="/nonexistent/tokens"))
    inline = auth_from_config(server_config(auth_tokens=f"reader:{TOKENS['reader']}:r"))
    assert inline is not None and inline.tokens.lookup(TOKENS["reader"]) == (Role.READER, "r")


def test_parse_errors_name_the_line_never_the_token() -> None:
    secret = "s3cr3t-but-bad-char!"
    for text, match in (
        ("reader", "expected role:token"),
        ("boss:abcdefghijklmnop", "not one of reader, writer, admin"),
        (f"{secret}:abcdefghijklmnop", "not one of reader, writer, admin"),
        ("reader:short", "at least 16 characters"),
        (f"reader:{secret}", "at least 16 characters"),
        ("reader:abcdefghijklmnop:bad name", "a name needs"),
        ("reader:abcdefghijklmnop\nadmin:abcdefghijklmnop", "already listed"),
    ):
        with pytest.raises(ValueError, match=match) as exc:
            parse_tokens(text, "tokens")
        assert str(exc.value).startswith("tokens:")
        assert secret not in str(exc.value) and "abcdefghijklmnop" not in str(exc.value)
    table = parse_tokens("# c\n\n Writer:abcdefghijklmnop  # trailing\n", "t")
    assert list(table.values()) == [(Role.WRITER, "writer@t:3")]


def test_lookup_compares_against_every_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    tokens = {f"tok-{i}-0123456789abcdef": f"n{i}" for i in range(5)}
    store = TokenStore(inline=",".join(f"reader:{t}:{n}" for t, n in tokens.items()))
    calls = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append(1)
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", counting)
    first = next(iter(tokens))
    assert store.lookup(first) == (Role.READER, "n0")
    assert len(calls) == 5
    assert store.lookup("unknown-token-0123456789") is None
    assert len(calls) == 10


def test_a_real_service_with_explicit_settings(
    redis_server: RedisProcess, tmp_path: Path, tokens_file: Path
) -> None:
    """A selection service process started with ACTIVEKD_AUTH_TOKENS_FILE: a writer may upload
    but not overwrite, a reader may list but not delete, no token is UNAUTHENTICATED."""
    env = {"ACTIVEKD_AUTH": "required", "ACTIVEKD_AUTH_TOKENS_FILE": str(tokens_file)}
    env["ACTIVEKD_AUTH_TOKENS"] = ""
    svc = ServiceProcess("selection", redis_server.url, str(tmp_path / "store"), env=env).start()
    try:
        with grpc.insecure_channel(svc.target) as ch:
            stub = selection_pb2_grpc.SelectionServiceStub(ch)

            def upload(overwrite: bool) -> Iterator[selection_pb2.UploadPoolRequest]:
                header = selection_pb2.UploadPoolHeader(
                    pool_id="auth-pool", num_items=2, overwrite=overwrite
                )
                yield selection_pb2.UploadPoolRequest(header=header)
                chunk = selection_pb2.UploadPoolChunk(offset=0, item_ids=["a", "b"])
                yield selection_pb2.UploadPoolRequest(chunk=chunk)

            writer, reader = _md(TOKENS["writer"]), _md(TOKENS["reader"])
            assert _code(stub.UploadPool, upload(False), metadata=writer, timeout=30)[0] == (
                grpc.StatusCode.OK
            )
            code, details = _code(stub.UploadPool, upload(True), metadata=writer, timeout=30)
            assert code == grpc.StatusCode.PERMISSION_DENIED, details
            assert "needs admin" in details
            listed = stub.ListPools(selection_pb2.ListPoolsRequest(), metadata=reader, timeout=30)
            assert "auth-pool" in str(listed)
            delete = selection_pb2.DeletePoolRequest(pool_id="auth-pool")
            code, details = _code(stub.DeletePool, delete, metadata=reader, timeout=30)
            assert (code, details) == (
                grpc.StatusCode.PERMISSION_DENIED,
                "role reader may not call DeletePool (needs admin)",
            )
            code, details = _code(stub.ListPools, selection_pb2.ListPoolsRequest(), timeout=30)
            assert (code, details) == (grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED_MESSAGE)
            admin = _md(TOKENS["admin"])
            assert _code(stub.DeletePool, delete, metadata=admin, timeout=30)[0] == (
                grpc.StatusCode.OK
            )
    finally:
        svc.stop()
    assert "admin-token" not in svc.logs()  # tokens are never logged
