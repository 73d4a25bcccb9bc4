"""A real Label Studio server for the tests: started from its own venv, on 127.0.0.1 and a free port,
with a fresh data directory (SQLite), a user and an API key obtained the way a person would.

The venv comes from ``scripts/label_studio_venv.sh`` (label-studio 1.23.2; it pins redis<5.3, which
the project venv cannot share). Stdlib only, so the module imports in any venv::

    with LabelStudioServer() as ls:
        ls.request("GET", "/api/projects")          # -> (200, {"count": 0, ...})
        ls.auth_header()                            # {"Authorization": "Bearer <access JWT>"}
        LabelStudio(base_url=ls.url, api_key=ls.api_key)   # label-studio-sdk 2.x takes the PAT as is

``python tests/annotation/label_studio_server.py`` starts one, prints its URL and key, checks the key
with ``GET /api/projects`` and stops it.

How the user and the key come about (label-studio 1.23.2):

* The user: ``label-studio start`` creates it at start-up from ``LABEL_STUDIO_USERNAME`` (an email)
  and ``LABEL_STUDIO_PASSWORD`` (label_studio/server.py ``_create_user``; the same as ``--username``
  / ``--password``, but the password stays out of ``ps``). It is a superuser in the one organization.
* The key, ``token="pat"`` (the default): a Personal Access Token. Over HTTP, as the browser does:
  GET ``/user/login/`` (csrftoken cookie + ``csrfmiddlewaretoken`` in the form), POST the form
  (``email``, ``password``, ``persist_session``) -> 302 with a ``sessionid`` cookie, then
  POST ``/api/token/`` with ``X-CSRFToken`` (the "Create token" button of Account & Settings;
  jwt_auth/views.py ``LSAPITokenView``) -> 201 ``{"token": "<refresh JWT>"}``. The PAT is a
  long-lived (200 years) simplejwt *refresh* token; requests carry an *access* token obtained from
  POST ``/api/token/refresh/`` ``{"refresh": PAT}`` -> ``{"access": ...}`` (5 minutes, simplejwt's
  default) as ``Authorization: Bearer <access>``. ``Bearer <PAT>`` itself is refused (401).
  ``auth_header()`` does that exchange and caches the access token until a minute before it expires;
  label-studio-sdk 2.x does the same by itself when given the PAT as ``api_key``.
* ``token="legacy"``: the old ``Authorization: Token <key>``. Since 1.18 or so organizations start
  with ``legacy_api_tokens_enabled=false`` (jwt_auth/models.py ``JWTSettings``), and a legacy token
  then gets 401 "legacy token authentication has been disabled" (jwt_auth/auth.py). After the same
  login, POST ``/api/jwt/settings`` ``{"api_tokens_enabled": true, "legacy_api_tokens_enabled":
  true}`` (Organization -> API Tokens settings page) and GET ``/api/current-user/token``.

PAT is the default because it is what a fresh 1.23 install gives a user and what the SDK expects;
legacy is there for clients that only speak ``Token`` -- and because the ML backend ``/setup`` call
hands the backend ``project.created_by.auth_token.key`` (the legacy key, ml/api_connector.py
``MLApi.setup``), which only authenticates once legacy tokens are on.

Environment of the server: every ``LABEL_STUDIO_*``/``HEARTEX_*`` variable of the caller is dropped
(and the bare names label_studio's ``get_env`` also reads, e.g. ``HOST``, ``PORT``, ``USERNAME``),
then: ``LABEL_STUDIO_BASE_DATA_DIR`` (SQLite db, media, SECRET_KEY live there),
``LABEL_STUDIO_HOST`` = the URL (the ``hostname`` that ML backends get in ``/setup``), Sentry, the
analytics and the PyPI version check off, and with ``allow_local_urls`` (default) the SSRF guards off
(``SSRF_PROTECTION_ENABLED=false`` for webhooks, ``ML_BLOCK_LOCAL_IP=false`` for ML backends): both
refuse 127.0.0.0/8 otherwise. ``local_files_root`` turns on ``LOCAL_FILES_SERVING_ENABLED`` with
``LOCAL_FILES_DOCUMENT_ROOT`` (tasks may then say ``/data/local-files/?d=<path under the root>``).

The server runs in its own process group; stop() sends SIGTERM to the group (it exits in well under
a second), then SIGKILL after ``stop_grace``. On Linux it also gets PR_SET_PDEATHSIG=SIGTERM, so it
goes when the process that started it dies without teardown -- strictly, when the *thread* that
called start() ends, so call start() from a thread that outlives the server (pytest's main thread).

Label Studio looks for Redis at localhost:6379, hard-coded (core/settings/base.py ``RQ_QUEUES``); if
one answers there, webhooks and other jobs go to an RQ queue that no worker reads. ``start()`` warns
when that port is taken.
"""

from __future__ import annotations

import base64
import contextlib
import http.cookiejar
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

LABEL_STUDIO_VERSION = "1.23.2"  # keep in step with scripts/label_studio_venv.sh
REPO_ROOT = Path(__file__).resolve().parents[2]
VENV_SCRIPT = REPO_ROOT / "scripts" / "label_studio_venv.sh"

# Bare names label_studio's get_env() falls back to (after LABEL_STUDIO_<name> and HEARTEX_<name>).
_SCRUBBED = (
    "HOST",
    "PORT",
    "USERNAME",
    "PASSWORD",
    "USER_TOKEN",
    "DATABASE_NAME",
    "DJANGO_DB",
    "BASE_DATA_DIR",
    "DJANGO_SETTINGS_MODULE",
    "SECRET_KEY",
    "PYTHONPATH",
    "PYTHONHOME",
)


class LabelStudioError(RuntimeError):
    """The server did not come up, or a request of the set-up failed."""


def default_venv() -> Path:
    return Path(
        os.environ.get("ACTIVEKD_LS_VENV")
        or Path.home() / ".cache" / "activekd" / "label-studio-venv"
    )


def venv_ready(venv: Path | None = None) -> bool:
    """Whether the venv holds a complete install of LABEL_STUDIO_VERSION (the script's marker)."""
    venv = venv or default_venv()
    marker = venv / ".label-studio-version"
    return (
        marker.is_file()
        and marker.read_text().strip() == LABEL_STUDIO_VERSION
        and (venv / "bin" / "label-studio").is_file()
    )


def ensure_venv(venv: Path | None = None) -> Path:
    """Create or update the venv with scripts/label_studio_venv.sh (about 2 minutes, ~1 GB)."""
    venv = venv or default_venv()
    if not venv_ready(venv):
        env = dict(os.environ, ACTIVEKD_LS_VENV=str(venv), ACTIVEKD_LS_VERSION=LABEL_STUDIO_VERSION)
        subprocess.run(["bash", str(VENV_SCRIPT)], check=True, env=env, stdout=subprocess.DEVNULL)
    return venv


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM it when the process that started it dies (Linux), so a
    test run killed without teardown does not leave a server behind."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1


def _jwt_exp(token: str) -> float:
    payload = token.split(".")[1]
    payload += "=" * (-len(payload) % 4)
    return float(json.loads(base64.urlsafe_b64decode(payload))["exp"])


class LabelStudioServer:
    """``label-studio start`` in a subprocess; use as a context manager or start()/stop()."""

    def __init__(
        self,
        venv: str | os.PathLike[str] | None = None,
        *,
        port: int | None = None,
        data_dir: str | os.PathLike[str] | None = None,
        username: str = "annotator@example.com",
        password: str = "activekd-Label-Studio-1",
        token: str = "pat",
        local_files_root: str | os.PathLike[str] | None = None,
        allow_local_urls: bool = True,
        startup_timeout: float = 300.0,
        stop_grace: float = 10.0,
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        if token not in ("pat", "legacy"):
            raise ValueError(f"token must be 'pat' or 'legacy', not {token!r}")
        self.venv = Path(venv) if venv else default_venv()
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.username = username
        self.password = password
        self.token_kind = token
        self.local_files_root = Path(local_files_root).resolve() if local_files_root else None
        self.allow_local_urls = allow_local_urls
        self.startup_timeout = startup_timeout
        self.stop_grace = stop_grace
        self.extra_env = dict(extra_env or {})
        # data_dir/log_path: given, or a fresh temp directory made by start() and removed by stop()
        self._given_data_dir = Path(data_dir).resolve() if data_dir else None
        self._own_root: Path | None = None
        self._keep_root = False
        self.data_dir: Path | None = None
        self.log_path: Path | None = None
        self.api_key: str = ""  # the PAT (refresh JWT) or the legacy token
        self.legacy_token: str | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: Any = None
        self._access: tuple[str, float] | None = None

    # --- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> LabelStudioServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> LabelStudioServer:
        exe = self.venv / "bin" / "label-studio"
        if not exe.is_file():
            raise LabelStudioError(
                f"no Label Studio at {exe}: run scripts/label_studio_venv.sh "
                "(or ensure_venv()) first; ACTIVEKD_LS_VENV picks another venv"
            )
        if _port_open("127.0.0.1", 6379):
            warnings.warn(
                "something listens on localhost:6379: Label Studio will treat it as its Redis and "
                "queue webhooks/jobs there for an RQ worker that does not exist",
                RuntimeWarning,
                stacklevel=2,
            )
        if self._given_data_dir is not None:
            self.data_dir = self._given_data_dir
            self.log_path = self.data_dir.parent / f"{self.data_dir.name}.server.log"
        else:
            self._own_root = Path(tempfile.mkdtemp(prefix="activekd-label-studio-"))
            self.data_dir = self._own_root / "data"
            self.log_path = self._own_root / "server.log"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 (closed in stop())
        self._proc = subprocess.Popen(
            [
                str(exe),
                "start",
                "--no-browser",
                "--internal-host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--data-dir",
                str(self.data_dir),
                "--log-level",
                "INFO",
            ],
            cwd=self.data_dir,
            env=self._env(),
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() signals the whole group
            preexec_fn=_die_with_parent,
        )
        try:
            self._wait_ready()
            self._obtain_key()
        except BaseException:
            self._keep_root = True  # the log stays for a look; the error holds its tail
            self.stop()
            raise
        return self

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(self.stop_grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self._own_root is not None and not self._keep_root:
            shutil.rmtree(self._own_root, ignore_errors=True)
            self._own_root = None

    def _env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("LABEL_STUDIO_", "HEARTEX_")) and k not in _SCRUBBED
        }
        env.update(
            VIRTUAL_ENV=str(self.venv),
            PATH=f"{self.venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
            LABEL_STUDIO_BASE_DATA_DIR=str(self.data_dir),
            LABEL_STUDIO_HOST=self.url,
            LABEL_STUDIO_USERNAME=self.username,
            LABEL_STUDIO_PASSWORD=self.password,
            LABEL_STUDIO_SENTRY_DSN="",
            LABEL_STUDIO_FRONTEND_SENTRY_DSN="",
            LABEL_STUDIO_COLLECT_ANALYTICS="false",
            LABEL_STUDIO_LATEST_VERSION_CHECK="false",
            PYTHONUNBUFFERED="1",
        )
        if self.allow_local_urls:
            env.update(
                LABEL_STUDIO_SSRF_PROTECTION_ENABLED="false", LABEL_STUDIO_ML_BLOCK_LOCAL_IP="false"
            )
        if self.local_files_root is not None:
            env.update(
                LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED="true",
                LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=str(self.local_files_root),
            )
        env.update(self.extra_env)
        return env

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace") if self.log_path else ""
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def _fail(self, why: str) -> LabelStudioError:
        return LabelStudioError(
            f"Label Studio at {self.url}: {why}\n---- last lines of {self.log_path} ----\n"
            f"{self.log_tail()}"
        )

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.startup_timeout
        while True:
            rc = self._proc.poll()
            if rc is not None:
                raise self._fail(f"exited with status {rc} before it was ready")
            try:
                with urllib.request.urlopen(f"{self.url}/health/", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise self._fail(
                    f"/health/ not 200 after {self.startup_timeout:.0f} s "
                    "(the first start runs the migrations: about a minute on 2 cores)"
                )
            time.sleep(0.5)

    # --- the user's session and key ------------------------------------------------------
    def login(self) -> tuple[urllib.request.OpenerDirector, http.cookiejar.CookieJar]:
        """Log in through /user/login/ like the browser; returns an opener with the session."""
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        login_url = f"{self.url}/user/login/"
        with opener.open(login_url, timeout=30) as resp:
            page = resp.read().decode()
        m = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
        if not m:
            raise self._fail("no csrfmiddlewaretoken in the login form")
        form = urllib.parse.urlencode(
            {
                "csrfmiddlewaretoken": m.group(1),
                "email": self.username,
                "password": self.password,
                "persist_session": "on",
            }
        ).encode()
        req = urllib.request.Request(
            login_url, data=form, headers={"Referer": login_url}, method="POST"
        )
        with opener.open(req, timeout=30) as resp:  # 302 to / is followed
            resp.read()
        if not any(c.name == "sessionid" for c in jar):
            raise self._fail(f"login as {self.username} did not give a session (wrong password?)")
        return opener, jar

    def _obtain_key(self) -> None:
        opener, jar = self.login()
        csrf = next((c.value for c in jar if c.name == "csrftoken"), "")

        def call(method: str, path: str, body: Any = None) -> Any:
            req = urllib.request.Request(
                self.url + path,
                data=None if body is None else json.dumps(body).encode(),
                headers={
                    "X-CSRFToken": csrf,
                    "Referer": self.url + "/",
                    "Content-Type": "application/json",
                },
                method=method,
            )
            try:
                with opener.open(req, timeout=30) as resp:
                    return json.loads(resp.read() or b"null")
            except urllib.error.HTTPError as e:
                raise self._fail(f"{method} {path}: HTTP {e.code} {e.read()[:500]!r}") from e

        if self.token_kind == "pat":
            self.api_key = call("POST", "/api/token/")["token"]
        else:
            call(
                "POST",
                "/api/jwt/settings",
                {"api_tokens_enabled": True, "legacy_api_tokens_enabled": True},
            )
            self.api_key = self.legacy_token = call("GET", "/api/current-user/token")["token"]

    def access_token(self) -> str:
        """A current access JWT for the PAT (POST /api/token/refresh/), cached until 60 s before expiry."""
        if self.token_kind != "pat":
            raise LabelStudioError("access tokens are for token='pat'")
        if self._access is None or self._access[1] - time.time() < 60:
            req = urllib.request.Request(
                f"{self.url}/api/token/refresh/",
                data=json.dumps({"refresh": self.api_key}).encode(),
                headers={"Content-Type": "application/json"},
                method="POST",
            )
            with urllib.request.urlopen(req, timeout=30) as resp:
                access = json.loads(resp.read())["access"]
            self._access = (access, _jwt_exp(access))
        return self._access[0]

    def auth_header(self) -> dict[str, str]:
        if self.token_kind == "pat":
            return {"Authorization": f"Bearer {self.access_token()}"}
        return {"Authorization": f"Token {self.api_key}"}

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """One API call with the key; returns (status, parsed JSON or None). Does not raise on 4xx/5xx."""
        req = urllib.request.Request(
            self.url + path,
            data=None if body is None else json.dumps(body).encode(),
            headers={**self.auth_header(), "Content-Type": "application/json"},
            method=method,
        )
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, raw.decode(errors="replace")


class AnnotationBackend:
    """``activekd-annotation`` as a real process."""

    def __init__(
        self,
        stack: Any,  # activekd.orchestration.local_services.LocalServices
        ls: LabelStudioServer,
        project: int,
        log: Path,
        experiment_id: str,
        secret: str,
        resync_seconds: float = 3.0,
        port: int | None = None,
    ) -> None:
        from activekd.orchestration.local_services import free_port as _free

        self.port = port or _free()
        self.url = f"http://127.0.0.1:{self.port}"
        assert stack.auth is not None and stack.redis is not None
        self.env = {
            **os.environ,
            **stack.auth.client_env("writer"),
            "ACTIVEKD_ANNOTATION_EXPERIMENT": experiment_id,
            "ACTIVEKD_ANNOTATION_PORT": str(self.port),
            "ACTIVEKD_ANNOTATION_SECRET": secret,
            "ACTIVEKD_ANNOTATION_METRICS_PORT": "-1",
            "ACTIVEKD_ANNOTATION_RESYNC_SECONDS": str(resync_seconds),
            "ACTIVEKD_EXPERIMENT_TARGET": stack.target("experiment"),
            "ACTIVEKD_REDIS_URL": stack.redis.url,
            "ACTIVEKD_STORE_URI": str(stack.root / "store"),
            "LABEL_STUDIO_URL": ls.url,
            "LABEL_STUDIO_API_KEY": ls.api_key,
            "LABEL_STUDIO_PROJECT": str(project),
        }
        self.log, self.secret = log, secret
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, connect: bool = False) -> AnnotationBackend:
        args = [sys.executable, "-m", "activekd.annotation"]
        if connect:
            args += ["--connect", self.url]
        self.proc = subprocess.Popen(
            args, env=self.env, stdout=self.log.open("ab"), stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 60
        while not self._healthy():
            if time.monotonic() > deadline:
                raise LabelStudioError(f"backend not healthy: {self.log.read_text()[-3000:]}")
            time.sleep(0.3)
        return self

    def _healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise LabelStudioError(f"backend exited: {self.log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=1) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def post(self, path: str, body: Any, auth: str | None = None) -> tuple[int, Any]:
        token = base64.b64encode(f"activekd:{self.secret}".encode()).decode()
        req = urllib.request.Request(
            self.url + path,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json",
                     "Authorization": auth if auth is not None else f"Basic {token}"},
        )  # fmt: skip
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--token", choices=["pat", "legacy"], default="pat")
    ap.add_argument(
        "--hold", type=float, default=0, help="seconds to keep it running after the check"
    )
    args = ap.parse_args(argv)
    t0 = time.monotonic()
    with LabelStudioServer(token=args.token) as ls:
        print(f"url:      {ls.url}  (ready and keyed in {time.monotonic() - t0:.1f} s)")
        print(f"user:     {ls.username} / {ls.password}")
        print(f"api_key:  {ls.api_key}  ({args.token})")
        print(f"data_dir: {ls.data_dir}\nlog:      {ls.log_path}")
        header = ls.auth_header()
        status, body = ls.request("GET", "/api/projects")
        print(f"GET /api/projects with {header['Authorization'].split()[0]} ...: {status} {body}")
        if status != 200:
            return 1
        if args.hold:
            time.sleep(args.hold)
    return 0


if __name__ == "__main__":
    sys.exit(main())
