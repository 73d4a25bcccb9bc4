"""Settings of the annotation backend, from ``ACTIVEKD_ANNOTATION_*`` and the usual names.

| variable | default | meaning |
| --- | --- | --- |
| ``ACTIVEKD_ANNOTATION_EXPERIMENT`` | (required) | the experiment this backend serves |
| ``ACTIVEKD_ANNOTATION_HOST`` / ``_PORT`` | ``127.0.0.1`` / ``9090`` | HTTP listen address |
| ``ACTIVEKD_ANNOTATION_SECRET`` / ``_SECRET_FILE`` | (required) | shared secret on every route but ``/health`` |
| ``ACTIVEKD_ANNOTATION_METRICS_PORT`` | ``9105`` | Prometheus port (-1: none) |
| ``ACTIVEKD_ANNOTATION_RESYNC_SECONDS`` | ``30`` | full pull of Label Studio's annotations |
| ``ACTIVEKD_ANNOTATION_AUTO_ADVANCE`` | ``true`` | advance the experiment when a round's labels are complete |
| ``ACTIVEKD_EXPERIMENT_TARGET`` | ``localhost:50054`` | the experiment service |
| ``ACTIVEKD_REDIS_URL`` / ``ACTIVEKD_STORE_URI`` | as the services | the ledger / the pool store (images, probabilities) |
| ``LABEL_STUDIO_URL``, ``LABEL_STUDIO_PROJECT`` | (required) | the Label Studio server and project id |
| ``LABEL_STUDIO_API_KEY`` / ``_API_KEY_FILE`` | (required) | its API key (personal access token or legacy token) |
| ``ACTIVEKD_CLIENT_TOKEN`` / ``_TOKEN_FILE`` ... | | this backend's own token for the gRPC services (a writer) |

``ACTIVEKD_ANNOTATION_HOST=0.0.0.0`` (or ``::``) opens the port beyond this host; the backend logs
a warning when it does, and refuses to start without a secret.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from activekd.errors import InvalidArgument

#: shortest shared secret accepted
MIN_SECRET_CHARS = 16


@dataclass(frozen=True)
class AnnotationConfig:
    experiment_id: str
    secret: str
    label_studio_url: str
    label_studio_api_key: str
    label_studio_project: int
    host: str = "127.0.0.1"
    port: int = 9090
    metrics_port: int = 9105
    resync_seconds: float = 30.0
    auto_advance: bool = True
    experiment_target: str = "localhost:50054"
    redis_url: str = "redis://localhost:6379/0"
    store_uri: str = "./.activekd/store"
    store_cache_dir: str = ""
    store_options: str = ""
    log_level: str = "INFO"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> AnnotationConfig:
        from activekd.annotation.labelstudio import api_key_from_env, value_or_file

        e = dict(os.environ if env is None else env)

        def need(name: str) -> str:
            value = e.get(name, "").strip()
            if not value:
                raise SystemExit(f"{name} is required (docs/annotation.md)")
            return value

        def number(name: str, default: str, kind: type = int) -> float:
            raw = e.get(name, default)
            try:
                return kind(raw)  # type: ignore[no-any-return]
            except ValueError:
                raise SystemExit(f"{name}={raw[:32]!r} is not a number") from None

        try:
            secret = value_or_file(
                e, "ACTIVEKD_ANNOTATION_SECRET", "ACTIVEKD_ANNOTATION_SECRET_FILE"
            )
        except Exception as exc:
            raise SystemExit(str(exc)) from None
        if len(secret) < MIN_SECRET_CHARS:
            raise SystemExit(
                f"set ACTIVEKD_ANNOTATION_SECRET (or _SECRET_FILE) to at least {MIN_SECRET_CHARS} "
                "characters: Label Studio sends it on every call (basic-auth password, webhook "
                "bearer token)"
            )
        try:
            api_key = api_key_from_env(e)
        except Exception as exc:
            raise SystemExit(str(exc)) from None
        project = need("LABEL_STUDIO_PROJECT")
        if not project.isdigit():
            raise SystemExit("LABEL_STUDIO_PROJECT must be the project's numeric id")
        advance = e.get("ACTIVEKD_ANNOTATION_AUTO_ADVANCE", "true").strip().lower()
        if advance not in ("true", "false", "1", "0"):
            raise SystemExit("ACTIVEKD_ANNOTATION_AUTO_ADVANCE must be true or false")
        cfg = cls(
            experiment_id=need("ACTIVEKD_ANNOTATION_EXPERIMENT"),
            secret=secret,
            label_studio_url=need("LABEL_STUDIO_URL"),
            label_studio_api_key=api_key,
            label_studio_project=int(project),
            host=e.get("ACTIVEKD_ANNOTATION_HOST", "127.0.0.1"),
            port=int(number("ACTIVEKD_ANNOTATION_PORT", "9090")),
            metrics_port=int(number("ACTIVEKD_ANNOTATION_METRICS_PORT", "9105")),
            resync_seconds=float(number("ACTIVEKD_ANNOTATION_RESYNC_SECONDS", "30", float)),
            auto_advance=advance in ("true", "1"),
            experiment_target=e.get("ACTIVEKD_EXPERIMENT_TARGET", "localhost:50054"),
            redis_url=e.get("ACTIVEKD_REDIS_URL", "redis://localhost:6379/0"),
            store_uri=e.get("ACTIVEKD_STORE_URI", "./.activekd/store"),
            store_cache_dir=e.get("ACTIVEKD_STORE_CACHE_DIR", ""),
            store_options=e.get("ACTIVEKD_STORE_OPTIONS", ""),
            log_level=e.get("ACTIVEKD_LOG_LEVEL", "INFO"),
        )
        if cfg.resync_seconds <= 0:
            raise SystemExit("ACTIVEKD_ANNOTATION_RESYNC_SECONDS must be > 0")
        return cfg

    @property
    def opens_network(self) -> bool:
        return self.host not in ("127.0.0.1", "localhost", "::1")

    def check(self) -> AnnotationConfig:
        if not self.label_studio_url.startswith(("http://", "https://")):
            raise InvalidArgument("LABEL_STUDIO_URL must be an http(s) URL")
        return self


__all__ = ["MIN_SECRET_CHARS", "AnnotationConfig"]
