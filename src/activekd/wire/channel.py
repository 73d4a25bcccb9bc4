"""One channel recipe and base class for every activekd client (credentials, deadlines, retries,
health).

Credentials come from :class:`ClientCredentials`: a bearer token (given, or read from a file that
is re-read when it changes) and, for TLS, a CA file and optionally a client certificate and key
(mutual TLS). Without explicit credentials a client reads the ``ACTIVEKD_CLIENT_*`` environment
variables, as kubectl reads its config:

    ACTIVEKD_CLIENT_TOKEN=... python -c 'from activekd.client import SelectionClient; ...'

Over TLS the token travels as gRPC call credentials (``access_token_call_credentials``, or a
metadata plugin for a token file). gRPC refuses call credentials on an insecure channel, so on a
plaintext channel a client interceptor adds the same ``authorization: Bearer`` header: use that
only on loopback or inside a mesh that encrypts (docs/security.md).

Only the standard library and grpc are imported here (the light client).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Self

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from activekd.errors import InvalidArgument

DEFAULT_TIMEOUT = 60.0
MAX_MESSAGE_BYTES = 64 * 1024 * 1024

#: the environment variables :meth:`ClientCredentials.from_env` reads, by field
CLIENT_ENV = {
    "token": "ACTIVEKD_CLIENT_TOKEN",
    "token_file": "ACTIVEKD_CLIENT_TOKEN_FILE",
    "ca_file": "ACTIVEKD_CLIENT_CA_FILE",
    "cert_file": "ACTIVEKD_CLIENT_CERT_FILE",
    "key_file": "ACTIVEKD_CLIENT_KEY_FILE",
    "server_name": "ACTIVEKD_CLIENT_TLS_SERVER_NAME",
}
#: the characters of a token (the servers' token files use the same rule)
TOKEN_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._~+/=-")

#: Methods retried on UNAVAILABLE: reads, and calls made idempotent by a request id.
IDEMPOTENT: dict[str, list[str]] = {
    "activekd.v1.SelectionService": [
        "SelectBatch",
        "DescribePool",
        "ListPools",
        "ListStrategies",
        "GetSelections",
        "DeletePool",
    ],
    "activekd.v1.TeacherService": ["DescribeTeacher", "Predict", "SetClasses"],
    "activekd.v1.TrainerService": ["PredictPool", "Evaluate", "ListCheckpoints"],
    "activekd.v1.ExperimentService": ["GetExperiment", "ListExperiments", "DeleteExperiment"],
    "grpc.health.v1.Health": ["Check"],
}


class CredentialsError(InvalidArgument):
    """Client credentials that cannot be used (an unreadable or malformed token or TLS file)."""


def bearer_metadata(token: str) -> tuple[tuple[str, str], ...]:
    """The call metadata that carries ``token``: ``(("authorization", "Bearer <token>"),)``.

    For raw stubs: ``stub.Predict(req, metadata=bearer_metadata(token))``.
    """
    return (("authorization", f"Bearer {token}"),)


def _check_token(token: str, where: str) -> str:
    if not token or any(c not in TOKEN_CHARS for c in token):
        hint = (
            "; a client needs the bare token, not a server's role:token line"
            if ":" in token
            else ""
        )
        raise CredentialsError(
            f"{where} is not a token (one line of letters, digits and ._~+/=-){hint}"
        )
    return token


class _FileToken:
    """A token read from a file and read again whenever the file changes (rotation: a k8s Secret
    swaps its ``..data`` symlink, so the inode changes too)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._token = ""
        self.get()  # fail at start, not on the first call

    def get(self) -> str:
        try:
            st = os.stat(self.path)
        except OSError as exc:
            if self._token:  # a rotation in progress: keep using the last good token
                return self._token
            raise CredentialsError(
                f"cannot read the token file {Path(self.path).name!r}: {exc.strerror}"
            ) from None
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        with self._lock:
            if stamp != self._stamp:
                try:
                    text = Path(self.path).read_text()
                except OSError as exc:
                    if self._token:
                        return self._token
                    raise CredentialsError(
                        f"cannot read the token file {Path(self.path).name!r}: {exc.strerror}"
                    ) from None
                lines = [s.strip() for s in text.splitlines()]
                lines = [s for s in lines if s and not s.startswith("#")]
                token = lines[0] if len(lines) == 1 else ""
                try:
                    self._token = _check_token(token, f"token file {Path(self.path).name!r}")
                except CredentialsError:
                    if not self._token:
                        raise
                    return self._token  # a half-written file: keep the last good token
                self._stamp = stamp
            return self._token


@dataclass(frozen=True)
class ClientCredentials:
    """How a client authenticates: a bearer token (``token``, or ``token_file`` re-read when it
    changes) and TLS files (``ca_file`` to verify the server, ``cert_file``/``key_file`` for mutual
    TLS). ``server_name`` overrides the name checked in the server's certificate.

    ``ClientCredentials()`` is a plaintext channel without a token. TLS is used only when
    ``ca_file`` or ``cert_file`` is set.
    """

    token: str = ""
    token_file: str = ""
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    server_name: str = ""

    def __repr__(self) -> str:  # never print the token
        shown = {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name)}
        if self.token:
            shown["token"] = "***"
        return f"ClientCredentials({', '.join(f'{k}={v!r}' for k, v in shown.items())})"

    @property
    def tls(self) -> bool:
        """True when the channel uses TLS (a CA file or a client certificate is set)."""
        return bool(self.ca_file or self.cert_file)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ClientCredentials:
        """Credentials from ``ACTIVEKD_CLIENT_TOKEN``, ``ACTIVEKD_CLIENT_TOKEN_FILE``,
        ``ACTIVEKD_CLIENT_CA_FILE``, ``ACTIVEKD_CLIENT_CERT_FILE``, ``ACTIVEKD_CLIENT_KEY_FILE`` and
        ``ACTIVEKD_CLIENT_TLS_SERVER_NAME`` (unset or empty: not used)."""
        env = os.environ if environ is None else environ
        return cls(**{name: env.get(var, "").strip() for name, var in CLIENT_ENV.items()})

    def with_token_file(self, path: str | os.PathLike[str]) -> ClientCredentials:
        """These credentials with the token read from ``path`` instead (``--token-file``)."""
        return ClientCredentials(
            "", os.fspath(path), self.ca_file, self.cert_file, self.key_file, self.server_name
        )

    def token_source(self) -> Callable[[], str] | None:
        """A function returning the current token (None without one); raises
        :class:`CredentialsError` at once for an unreadable token file."""
        if self.token:
            token = _check_token(self.token, "the client token")
            return lambda: token
        if self.token_file:
            return _FileToken(self.token_file).get
        return None

    def channel_credentials(self) -> Any:
        """``grpc.ssl_channel_credentials`` from the files (TLS only)."""

        def read(path: str, what: str) -> bytes | None:
            if not path:
                return None
            try:
                return Path(path).read_bytes()
            except OSError as exc:
                raise CredentialsError(
                    f"cannot read the {what} {Path(path).name!r}: {exc.strerror}"
                ) from None

        if bool(self.cert_file) != bool(self.key_file):
            raise CredentialsError("mutual TLS needs both a client certificate and its key")
        return grpc.ssl_channel_credentials(
            root_certificates=read(self.ca_file, "CA file"),
            private_key=read(self.key_file, "client key"),
            certificate_chain=read(self.cert_file, "client certificate"),
        )


# ---------------------------------------------------------------------------------- tokens
class _TokenPlugin(grpc.AuthMetadataPlugin):  # type: ignore[misc]
    """Call credentials reading the current token for every call (TLS channels)."""

    def __init__(self, source: Callable[[], str]) -> None:
        self._source = source

    def __call__(self, context: Any, callback: Any) -> None:
        try:
            callback(bearer_metadata(self._source()), None)
        except Exception as exc:
            callback((), exc)


class _CallDetails(grpc.ClientCallDetails):  # type: ignore[misc]
    def __init__(self, details: Any, metadata: tuple[tuple[str, str], ...]) -> None:
        self.method = details.method
        self.timeout = details.timeout
        self.metadata = metadata
        self.credentials = details.credentials
        self.wait_for_ready = getattr(details, "wait_for_ready", None)
        self.compression = getattr(details, "compression", None)


class _BearerInterceptor(
    grpc.UnaryUnaryClientInterceptor,  # type: ignore[misc]
    grpc.UnaryStreamClientInterceptor,  # type: ignore[misc]
    grpc.StreamUnaryClientInterceptor,  # type: ignore[misc]
    grpc.StreamStreamClientInterceptor,  # type: ignore[misc]
):
    """Adds ``authorization: Bearer <token>`` to every call of a plaintext channel (gRPC refuses
    call credentials there)."""

    def __init__(self, source: Callable[[], str]) -> None:
        self._source = source
        self.closed = False

    def _details(self, details: Any) -> Any:
        if self.closed:  # before grpc touches the closed channel (see _BearerChannel)
            raise ValueError("Cannot invoke RPC on closed channel!")
        metadata = tuple(details.metadata or ())
        if any(k.lower() == "authorization" for k, _ in metadata):
            return details  # the caller's own token for this call
        return _CallDetails(details, (*metadata, *bearer_metadata(self._source())))

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_unary(
        self, continuation: Any, details: Any, request_iterator: Iterator[Any]
    ) -> Any:
        return continuation(self._details(details), request_iterator)

    def intercept_stream_stream(
        self, continuation: Any, details: Any, request_iterator: Iterator[Any]
    ) -> Any:
        return continuation(self._details(details), request_iterator)


class _BearerChannel(grpc.Channel):  # type: ignore[misc]
    """A plaintext channel whose calls go through :class:`_BearerInterceptor`.

    Closing it makes the interceptor refuse further calls: an intercepted call looks its method
    up on the underlying channel at call time, which crashes the process (grpc 1.85) once that
    channel is closed, where a plain channel raises ValueError.
    """

    def __init__(self, channel: grpc.Channel, source: Callable[[], str]) -> None:
        self._raw = channel
        self._interceptor = _BearerInterceptor(source)
        self._channel = grpc.intercept_channel(channel, self._interceptor)

    def subscribe(self, callback: Any, try_to_connect: bool = False) -> None:
        self._raw.subscribe(callback, try_to_connect=try_to_connect)

    def unsubscribe(self, callback: Any) -> None:
        self._raw.unsubscribe(callback)

    def unary_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self._channel.unary_unary(method, *args, **kwargs)

    def unary_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self._channel.unary_stream(method, *args, **kwargs)

    def stream_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self._channel.stream_unary(method, *args, **kwargs)

    def stream_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self._channel.stream_stream(method, *args, **kwargs)

    def close(self) -> None:
        self._interceptor.closed = True
        self._raw.close()

    def __enter__(self) -> _BearerChannel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------------- channel
def _service_config(retries: int) -> str:
    methods = [{"service": s, "method": m} for s, ms in IDEMPOTENT.items() for m in ms]
    return json.dumps(
        {
            "methodConfig": [
                {
                    "name": methods,
                    "retryPolicy": {
                        "maxAttempts": max(2, min(retries + 1, 5)),
                        "initialBackoff": "0.2s",
                        "maxBackoff": "5s",
                        "backoffMultiplier": 2,
                        "retryableStatusCodes": ["UNAVAILABLE"],
                    },
                }
            ]
        }
    )


def make_channel(
    target: str, retries: int = 3, *, credentials: ClientCredentials | None = None
) -> grpc.Channel:
    """A channel with large message limits, keepalive, the retry policy above and
    ``credentials`` (None: :meth:`ClientCredentials.from_env`).

    TLS when the credentials name a CA file or client certificate, the token as call
    credentials; plaintext otherwise, the token added by a client interceptor.
    """
    creds = ClientCredentials.from_env() if credentials is None else credentials
    options: list[tuple[str, Any]] = [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.enable_retries", 1),
        ("grpc.service_config", _service_config(retries)),
        ("grpc.keepalive_time_ms", 30_000),
    ]
    source = creds.token_source()
    if creds.tls:
        if creds.server_name:
            options.append(("grpc.ssl_target_name_override", creds.server_name))
        channel_creds = creds.channel_credentials()
        if source is not None:
            call_creds = (
                grpc.access_token_call_credentials(creds.token)
                if creds.token
                else grpc.metadata_call_credentials(_TokenPlugin(source), name="activekd-token")
            )
            channel_creds = grpc.composite_channel_credentials(channel_creds, call_creds)
        return grpc.secure_channel(target, channel_creds, options=options)
    channel = grpc.insecure_channel(target, options=options)
    if source is None:
        return channel
    return _BearerChannel(channel, source)


class BaseClient:
    """A channel to one server plus its health check; a context manager that closes it.

    ``credentials`` None reads the ``ACTIVEKD_CLIENT_*`` environment variables.
    """

    def __init__(
        self,
        target: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = 3,
        credentials: ClientCredentials | None = None,
    ) -> None:
        self.target, self.timeout = target, timeout
        self.channel = make_channel(target, retries, credentials=credentials)
        self._health = health_pb2_grpc.HealthStub(self.channel)

    def wait_ready(self, timeout: float = 30.0, service: str = "") -> None:
        """Block until the server's health says SERVING (raises grpc.RpcError / TimeoutError)."""
        grpc.channel_ready_future(self.channel).result(timeout=timeout)
        resp = self._health.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        if resp.status != health_pb2.HealthCheckResponse.SERVING:
            raise TimeoutError(
                f"{self.target} is {health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)}"
            )

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _deadline(self, timeout: float | None) -> float:
        return self.timeout if timeout is None else timeout


__all__ = [
    "CLIENT_ENV",
    "DEFAULT_TIMEOUT",
    "IDEMPOTENT",
    "MAX_MESSAGE_BYTES",
    "BaseClient",
    "ClientCredentials",
    "CredentialsError",
    "bearer_metadata",
    "make_channel",
]
