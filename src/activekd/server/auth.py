"""Bearer-token authentication and roles for every service: one ``grpc.aio`` server interceptor.

A caller sends ``authorization: Bearer <token>`` metadata (``grpc.access_token_call_credentials``
or ``grpc.metadata_call_credentials`` on the client). Each token carries a role:

- ``reader``: describe, list, get, watch, predict;
- ``writer``: also select, upload, score, train, advance, submit labels;
- ``admin``: also delete pools and experiments, overwrite pools, force a re-score.

Tokens come from files (``ACTIVEKD_AUTH_TOKENS_FILE``, comma-separated paths, re-read when they
change: rotation without a restart) and/or ``ACTIVEKD_AUTH_TOKENS`` (comma-separated entries).
Each entry is ``role:token[:name]``; in files one per line, ``#`` starts a comment. Tokens are
compared as SHA-256 digests with :func:`hmac.compare_digest` against every entry, so neither the
time taken nor the answer tells a caller whether a token exists; a refused call always gets
UNAUTHENTICATED with :data:`UNAUTHENTICATED_MESSAGE`. Tokens are never logged; names and roles are.

Health (and reflection while ``ACTIVEKD_REFLECTION=open``) stays open. ``ACTIVEKD_AUTH=off``
turns authentication off explicitly and logs a WARNING at start.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import inspect
import logging
import re
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.message import Message

from activekd import errors
from activekd.server import metrics
from activekd.server.config import ServerConfig
from activekd.server.interceptors import rpc_type_of

log = logging.getLogger("activekd.auth")


class Role(enum.IntEnum):
    """What a token may do; a higher role may do everything a lower one may."""

    READER = 1
    WRITER = 2
    ADMIN = 3

    @property
    def label(self) -> str:
        """``reader``, ``writer`` or ``admin`` (the spelling of token files)."""
        return self.name.lower()


@dataclass(frozen=True)
class MethodRule:
    """The role a method needs; ``admin_if(request)`` true raises that to ADMIN (``admin_what``
    says why in the PERMISSION_DENIED message, e.g. "with overwrite")."""

    role: Role
    admin_if: Callable[[Message], bool] | None = None
    admin_what: str = ""


def _upload_overwrites(msg: Message) -> bool:
    return msg.WhichOneof("part") == "header" and bool(msg.header.overwrite)  # type: ignore[attr-defined]


def _score_forced(msg: Message) -> bool:
    return bool(getattr(msg, "force", False))


_R, _W, _A = MethodRule(Role.READER), MethodRule(Role.WRITER), MethodRule(Role.ADMIN)
_SEL, _TEA = "/activekd.v1.SelectionService/", "/activekd.v1.TeacherService/"
_TRA, _EXP = "/activekd.v1.TrainerService/", "/activekd.v1.ExperimentService/"

#: The role each RPC needs, keyed by full method ("/activekd.v1.SelectionService/DeletePool").
#: A method missing here needs ADMIN (fail closed); tests/server/test_auth.py checks the table
#: covers every method of the four services.
METHOD_RULES: dict[str, MethodRule] = {
    _SEL + "SelectBatch": _W,
    _SEL + "UploadPool": MethodRule(Role.WRITER, _upload_overwrites, "with overwrite"),
    _SEL + "DescribePool": _R,
    _SEL + "ListPools": _R,
    _SEL + "DeletePool": _A,
    _SEL + "ListStrategies": _R,
    _SEL + "GetSelections": _R,
    _TEA + "DescribeTeacher": _R,
    _TEA + "Predict": _R,
    _TEA + "PredictStream": _R,
    _TEA + "ScorePool": MethodRule(Role.WRITER, _score_forced, "with force"),
    _TEA + "SetClasses": _W,
    _TRA + "TrainRound": _W,
    _TRA + "PredictPool": _W,
    _TRA + "Evaluate": _R,
    _TRA + "ListCheckpoints": _R,
    _TRA + "GetCheckpoint": _R,
    _EXP + "CreateExperiment": _W,
    _EXP + "GetExperiment": _R,
    _EXP + "ListExperiments": _R,
    _EXP + "DeleteExperiment": _A,
    _EXP + "AdvanceRound": _W,
    _EXP + "SubmitLabels": _W,
    _EXP + "WatchExperiment": _R,
}

#: Methods open without a token. Reflection joins them while ``reflection == "open"``.
EXEMPT_PREFIXES: tuple[str, ...] = ("/grpc.health.v1.Health/",)
REFLECTION_PREFIX = "/grpc.reflection."
#: Roles for methods outside METHOD_RULES, by prefix (reflection while ``reflection == "auth"``).
PREFIX_RULES: dict[str, MethodRule] = {REFLECTION_PREFIX: _R}

#: The one message of every UNAUTHENTICATED answer (no hint whether the token exists).
UNAUTHENTICATED_MESSAGE = "missing or invalid bearer token"

#: The settings an operator uses; named in start-up errors.
TOKEN_SETTINGS = "ACTIVEKD_AUTH_TOKENS_FILE / ACTIVEKD_AUTH_TOKENS"

_TOKEN = re.compile(r"[A-Za-z0-9._~+/=-]{16,4096}")
_NAME = re.compile(r"[A-Za-z0-9._@-]{1,64}")
_RELOAD_EVERY = 1.0  # seconds between checks of the token files


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def parse_tokens(text: str, source: str) -> dict[bytes, tuple[Role, str]]:
    """``sha256(token) -> (role, name)`` for each ``role:token[:name]`` line of ``text``.

    Blank lines and ``#`` comments are skipped. Raises ``ValueError`` naming ``source`` and the
    line number (never the token) for an unknown role, a token shorter than 16 characters or with
    characters outside ``[A-Za-z0-9._~+/=-]``, a bad name, or a token listed twice.
    """
    out: dict[bytes, tuple[Role, str]] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        where = f"{source}:{n}"
        parts = line.split(":")
        if len(parts) not in (2, 3):
            raise ValueError(f"{where}: expected role:token[:name]")
        role_text, token = parts[0].strip().lower(), parts[1].strip()
        try:
            role = Role[role_text.upper()]
        except KeyError:
            # the text is not echoed: a token pasted into the role field must not reach a log
            raise ValueError(f"{where}: the role is not one of reader, writer, admin") from None
        if not _TOKEN.fullmatch(token):
            raise ValueError(f"{where}: a token needs at least 16 characters of [A-Za-z0-9._~+/=-]")
        name = parts[2].strip() if len(parts) == 3 else f"{role.label}@{where}"
        if len(parts) == 3 and not _NAME.fullmatch(name):
            raise ValueError(f"{where}: a name needs 1-64 characters of [A-Za-z0-9._@-]")
        digest = _digest(token)
        if digest in out:
            raise ValueError(f"{where}: this token is already listed")
        out[digest] = (role, name)
    return out


def _file_stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


class TokenStore:
    """The accepted tokens: ``inline`` entries (comma-separated) plus those in ``files``.

    The files are re-read when their ``(inode, mtime, size)`` changes, checked at most once a
    second (a Kubernetes Secret update swaps a symlink: a new inode). A file that no longer
    parses or cannot be read keeps the previous set and logs an ERROR. At construction every
    file must read and parse (``OSError`` / ``ValueError`` otherwise).
    """

    def __init__(self, files: Sequence[Path | str] = (), inline: str = "") -> None:
        self._files = tuple(Path(f) for f in files)
        self._inline = parse_tokens(inline.replace(",", "\n"), "ACTIVEKD_AUTH_TOKENS")
        self._lock = threading.Lock()
        self._stamps: tuple[tuple[int, int, int] | None, ...] = ()
        self._checked = 0.0
        self._entries: tuple[tuple[bytes, Role, str], ...] = ()
        self._load(self._read_files(), tuple(_file_stamp(p) for p in self._files))

    def _read_files(self) -> dict[bytes, tuple[Role, str]]:
        merged: dict[bytes, tuple[Role, str]] = {}
        for path in self._files:
            for digest, entry in parse_tokens(path.read_text(), path.name).items():
                if digest in merged or digest in self._inline:
                    raise ValueError(f"{path.name}: a token is listed in two places")
                merged[digest] = entry
        return merged

    def _load(
        self,
        from_files: dict[bytes, tuple[Role, str]],
        stamps: tuple[tuple[int, int, int] | None, ...],
    ) -> None:
        table = {**self._inline, **from_files}
        self._entries = tuple((d, role, name) for d, (role, name) in table.items())
        self._stamps = stamps
        self._checked = time.monotonic()

    def _maybe_reload(self) -> None:
        if not self._files or time.monotonic() - self._checked < _RELOAD_EVERY:
            return
        with self._lock:
            now = time.monotonic()
            if now - self._checked < _RELOAD_EVERY:
                return
            self._checked = now
            stamps = tuple(_file_stamp(p) for p in self._files)
            if stamps == self._stamps:
                return
            try:
                from_files = self._read_files()
            except (OSError, ValueError, UnicodeDecodeError) as exc:
                self._stamps = stamps  # report once per change, not once a second
                log.error(
                    "auth token file not reloaded; keeping the previous tokens",
                    extra={"error": str(exc)},
                )
                return
            self._load(from_files, stamps)
            log.info("auth tokens reloaded", extra={"tokens": self.describe()})

    def lookup(self, token: str) -> tuple[Role, str] | None:
        """``(role, name)`` of ``token``, or None. Compares against every entry (constant time)."""
        self._maybe_reload()
        digest = _digest(token)
        found: tuple[Role, str] | None = None
        for entry_digest, role, name in self._entries:
            if hmac.compare_digest(entry_digest, digest):
                found = (role, name)
        return found

    def describe(self) -> list[str]:
        """``name=role`` for each token (for logs; no token text)."""
        return sorted(f"{name}={role.label}" for _, role, name in self._entries)

    def __len__(self) -> int:
        self._maybe_reload()
        return len(self._entries)


def _bearer(metadata: Sequence[Any] | None) -> str | None:
    for item in metadata or ():
        key, value = item[0], item[1]
        if key == "authorization":
            if isinstance(value, bytes):
                value = value.decode("latin-1")
            scheme, _, token = str(value).partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            return None
    return None


_FACTORIES: dict[str, Callable[..., grpc.RpcMethodHandler]] = {
    "unary": grpc.unary_unary_rpc_method_handler,
    "client_stream": grpc.stream_unary_rpc_method_handler,
    "server_stream": grpc.unary_stream_rpc_method_handler,
    "bidi_stream": grpc.stream_stream_rpc_method_handler,
}


def _ignore_body(raw: bytes) -> None:
    """The deserializer of a refused call: its body is never parsed."""
    return None


def _refusing(
    handler: grpc.RpcMethodHandler, method: str, code: grpc.StatusCode, message: str
) -> grpc.RpcMethodHandler:
    """A handler of the same kind as ``handler`` that aborts with ``code`` and records metrics."""
    rpc_type = rpc_type_of(handler)

    async def refuse(context: grpc.aio.ServicerContext) -> None:
        metrics.rpc_started(method, rpc_type)
        start = time.perf_counter()
        try:
            await context.abort(code, message)
        finally:
            metrics.rpc_handled(method, rpc_type, code.name, time.perf_counter() - start)

    if handler.response_streaming:

        async def stream_behavior(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await refuse(context)
            yield  # pragma: no cover - abort raised

        behavior: Any = stream_behavior
    else:

        async def unary_behavior(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await refuse(context)

        behavior = unary_behavior
    return _FACTORIES[rpc_type](
        behavior,
        request_deserializer=_ignore_body,
        response_serializer=handler.response_serializer,
    )


def _denied_message(role: Role, method: str, rule: MethodRule, escalated: bool) -> str:
    short = method.rsplit("/", 1)[-1]
    what = f" {rule.admin_what}" if escalated and rule.admin_what else ""
    needs = Role.ADMIN if escalated else rule.role
    return f"role {role.label} may not call {short}{what} (needs {needs.label})"


def _checking(
    handler: grpc.RpcMethodHandler, method: str, rule: MethodRule, role: Role
) -> grpc.RpcMethodHandler:
    """``handler`` with its requests checked by ``rule.admin_if``; the request deserializer (the
    inner interceptor's safe one) and serializer are kept."""
    assert rule.admin_if is not None
    admin_if = rule.admin_if
    rpc_type = rpc_type_of(handler)
    message = _denied_message(role, method, rule, escalated=True)

    def escalates(request: Any) -> bool:
        return isinstance(request, Message) and admin_if(request)

    async def deny(context: grpc.aio.ServicerContext) -> None:
        metrics.rpc_started(method, rpc_type)
        metrics.rpc_handled(method, rpc_type, "PERMISSION_DENIED", 0.0)
        log.info("rpc denied", extra={"method": method, "role": role.label})
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, message)

    async def checked(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
        async for request in requests:
            if escalates(request):
                log.info("rpc denied", extra={"method": method, "role": role.label})
                raise errors.PermissionDenied(message)
            yield request

    if handler.request_streaming:
        inner: Callable[..., Any] = handler.stream_stream or handler.stream_unary
        if handler.response_streaming:

            async def bidi(requests: Any, context: grpc.aio.ServicerContext) -> Any:
                result = inner(checked(requests), context)
                if inspect.isasyncgen(result):
                    async for item in result:
                        yield item
                else:
                    await result

            behavior: Any = bidi
        else:

            async def client_stream(requests: Any, context: grpc.aio.ServicerContext) -> Any:
                return await inner(checked(requests), context)

            behavior = client_stream
    else:
        inner = handler.unary_stream or handler.unary_unary
        if handler.response_streaming:

            async def server_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
                if escalates(request):
                    await deny(context)
                result = inner(request, context)
                if inspect.isasyncgen(result):
                    async for item in result:
                        yield item
                else:
                    await result

            behavior = server_stream
        else:

            async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                if escalates(request):
                    await deny(context)
                return await inner(request, context)

            behavior = unary
    return _FACTORIES[rpc_type](
        behavior,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


def _prefix_rule(method: str) -> MethodRule:
    for prefix, rule in PREFIX_RULES.items():
        if method.startswith(prefix):
            return rule
    return _A  # fail closed


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Refuses calls without a known bearer token (UNAUTHENTICATED) or beyond the token's role
    (PERMISSION_DENIED). Outermost interceptor: the decision is made from the call's metadata
    before its body is read."""

    def __init__(
        self, tokens: TokenStore, *, open_prefixes: Sequence[str] = EXEMPT_PREFIXES
    ) -> None:
        self.tokens = tokens
        self.open_prefixes = tuple(open_prefixes)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = handler_call_details.method
        if method.startswith(self.open_prefixes):
            return await continuation(handler_call_details)
        token = _bearer(handler_call_details.invocation_metadata)
        found = self.tokens.lookup(token) if token is not None else None
        handler = await continuation(handler_call_details)
        if handler is None:  # unknown method: UNIMPLEMENTED, as without auth
            return handler
        if found is None:
            log.info("rpc unauthenticated", extra={"method": method})
            return _refusing(
                handler, method, grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED_MESSAGE
            )
        role, name = found
        rule = METHOD_RULES.get(method) or _prefix_rule(method)
        if role < rule.role:
            log.info("rpc denied", extra={"method": method, "role": role.label, "token": name})
            return _refusing(
                handler,
                method,
                grpc.StatusCode.PERMISSION_DENIED,
                _denied_message(role, method, rule, escalated=False),
            )
        if rule.admin_if is None or role >= Role.ADMIN:
            return handler
        return _checking(handler, method, rule, role)


def auth_from_config(config: ServerConfig) -> AuthInterceptor | None:
    """The interceptor ``config`` asks for; None (with a WARNING) only for ``auth == "off"``.

    Raises ``SystemExit`` with one line for an unknown ``auth``/``reflection`` value, a token
    file that cannot be read or parsed, or ``auth == "required"`` with no token configured.
    """
    mode = config.auth.strip().lower()
    if mode == "off":
        log.warning(
            "authentication is OFF (ACTIVEKD_AUTH=off): anyone who can reach the gRPC port "
            "may call every RPC"
        )
        return None
    if mode != "required":
        raise SystemExit(f"ACTIVEKD_AUTH={config.auth[:32]!r} is not one of: required, off")
    reflection = config.reflection.strip().lower()
    if reflection not in ("open", "auth", "off"):
        raise SystemExit(
            f"ACTIVEKD_REFLECTION={config.reflection[:32]!r} is not one of: open, auth, off"
        )
    files = [Path(p.strip()) for p in config.auth_tokens_file.split(",") if p.strip()]
    try:
        tokens = TokenStore(files, config.auth_tokens)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        if isinstance(exc, OSError) and exc.strerror:
            detail = f"{Path(str(exc.filename or '')).name}: {exc.strerror}"
        else:
            detail = str(exc)
        raise SystemExit(f"cannot load auth tokens ({TOKEN_SETTINGS}): {detail}") from exc
    if len(tokens) == 0:
        raise SystemExit(
            f"authentication is required but no token is configured: set {TOKEN_SETTINGS} "
            "(role:token[:name] entries), or ACTIVEKD_AUTH=off to run without authentication"
        )
    prefixes = EXEMPT_PREFIXES + ((REFLECTION_PREFIX,) if reflection == "open" else ())
    log.info(
        "authentication required",
        extra={"tokens": tokens.describe(), "files": len(files), "reflection": reflection},
    )
    return AuthInterceptor(tokens, open_prefixes=prefixes)


__all__ = [
    "EXEMPT_PREFIXES",
    "METHOD_RULES",
    "PREFIX_RULES",
    "REFLECTION_PREFIX",
    "UNAUTHENTICATED_MESSAGE",
    "AuthInterceptor",
    "MethodRule",
    "Role",
    "TokenStore",
    "auth_from_config",
    "parse_tokens",
]
