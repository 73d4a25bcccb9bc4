"""Dockerfile sanity without a Docker daemon: stages, non-root user, HEALTHCHECK, pins, ignores."""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import tomllib
from dataclasses import dataclass, field

import pytest

from tests.deploy.conftest import REPO, THIRD_PARTY_ENV


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, with line continuations joined and comments dropped."""
    logical: list[str] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not current):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    assert not current, "Dockerfile ends inside a line continuation"
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "FROM":
            parts = args.split()
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else str(len(stages))
            stages.append(Stage(name, parts[0]))
        elif not stages:
            assert keyword == "ARG", f"only ARG may precede the first FROM, got {keyword}"
            key, _, default = args.partition("=")
            global_args[key] = default
        else:
            stages[-1].instructions.append((keyword, args))
    return global_args, stages


@pytest.fixture(scope="module")
def dockerfile() -> tuple[dict[str, str], dict[str, Stage], list[Stage]]:
    global_args, stages = parse_dockerfile((REPO / "Dockerfile").read_text())
    return global_args, {s.name: s for s in stages}, stages


def _chain(stages: dict[str, Stage], name: str) -> list[Stage]:
    """A stage and the stages it is built FROM, nearest first."""
    out = [stages[name]]
    while out[-1].base in stages:
        out.append(stages[out[-1].base])
    return out


def _effective(stages: dict[str, Stage], name: str, keyword: str) -> str | None:
    """The last ``keyword`` instruction in effect for a stage (inherited through FROM)."""
    for stage in _chain(stages, name):
        found = stage.all(keyword)
        if found:
            return found[-1]
    return None


def _env(stages: dict[str, Stage], name: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for stage in reversed(_chain(stages, name)):
        for args in stage.all("ENV"):
            for token in shlex.split(args):
                key, _, value = token.partition("=")
                env[key] = value
    return env


def _constraint_pins() -> dict[str, str]:
    """constraints.txt's ``name==version`` lines, by normalized name."""
    pins: dict[str, str] = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version.strip()
    return pins


# The extras an image needs to run all four services (and the HEALTHCHECK, which is in the base).
IMAGE_EXTRAS = {"selection", "teacher", "trainer", "experiment"}


RUNTIME_TARGETS = ("cpu", "cuda")


def test_stages_and_default_target(dockerfile) -> None:  # type: ignore[no-untyped-def]
    global_args, stages, ordered = dockerfile
    assert set(RUNTIME_TARGETS) | {"build-cpu", "build-cuda", "runtime-base"} <= set(stages)
    assert ordered[-1].name == "cpu", "a plain `docker build .` must give the CPU image"
    python_image = global_args["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:3\.1[1-9]-slim(-\w+)?", python_image), python_image
    for target in RUNTIME_TARGETS:
        chain = _chain(stages, target)
        # runtime images start from the slim Python image, never from a build stage
        assert chain[-1].base == "${PYTHON_IMAGE}"
        assert not any(s.name.startswith("build") for s in chain)
        copies = [c for s in chain for c in s.all("COPY") if c.startswith("--from=")]
        assert copies == [f"--from=build-{target} /opt/venv /opt/venv"]
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    for build in ("build-cpu", "build-cuda"):
        chain = _chain(stages, build)
        copied = " ".join(c for s in chain for c in s.all("COPY"))
        assert "constraints.txt" in copied.split(), "the build stages need constraints.txt"
        runs = " ".join(r for s in chain for r in s.all("RUN"))
        # the project at the pinned versions, with the extras of the four services
        installs = re.findall(r'pip install -c constraints\.txt "\.\[([a-z0-9_,-]+)\]"', runs)
        assert len(installs) == 1, f'{build}: pip install -c constraints.txt ".[extras]" once'
        named = set(installs[0].split(","))
        assert named <= set(extras), f"{build}: unknown extras {named - set(extras)}"
        assert named >= IMAGE_EXTRAS, f"{build}: the image lacks extras {IMAGE_EXTRAS - named}"
        # every other pip install either pins its packages (the torch index step) or uses the file
        for cmd in re.findall(r"pip install ([^&]+)", runs):
            packages = [a for a in shlex.split(cmd) if not a.startswith("-") and "://" not in a]
            packages = [a for a in packages if not a.startswith("${")]
            assert "-c constraints.txt" in cmd or all("==" in a for a in packages), cmd


@pytest.mark.parametrize("target", RUNTIME_TARGETS)
def test_runtime_is_non_root_with_grpc_healthcheck(dockerfile, target: str) -> None:  # type: ignore[no-untyped-def]
    _, stages, _ = dockerfile
    user = _effective(stages, target, "USER")
    assert user is not None
    uid = user.split(":")[0]
    assert uid not in ("0", "root") and uid.isdigit() and int(uid) >= 1000
    health = _effective(stages, target, "HEALTHCHECK")
    assert health is not None
    cmd = json.loads(health[health.index("CMD") + 3 :].strip())
    assert cmd[:3] == ["python", "-m", "activekd.server.healthcheck"]
    assert (REPO / "src/activekd/server/healthcheck.py").is_file()
    start_period = re.search(r"--start-period=(\d+)s", health)
    assert start_period and int(start_period.group(1)) >= 120, "model loading takes minutes"
    command = json.loads(_effective(stages, target, "CMD") or "[]")
    assert command[:2] == ["python", "-m"]
    assert (REPO / "services" / command[2].split(".")[1] / "__main__.py").is_file()


def test_versions_match_constraints(dockerfile) -> None:  # type: ignore[no-untyped-def]
    _, stages, _ = dockerfile
    pins = _constraint_pins()
    for build in ("build-cpu", "build-cuda"):
        args = dict(a.partition("=")[::2] for a in stages[build].all("ARG"))
        assert args["TORCH_VERSION"] == pins["torch"]
        assert args["TORCHVISION_VERSION"] == pins["torchvision"]
    cuda_args = dict(a.partition("=")[::2] for a in stages["build-cuda"].all("ARG"))
    assert cuda_args["FAISS_GPU_VERSION"] == pins["faiss-cpu"]
    cuda_run = " ".join(stages["build-cuda"].all("RUN"))
    assert "pip uninstall -y faiss-cpu" in cuda_run
    assert 'pip install -c constraints.txt "faiss-gpu==${FAISS_GPU_VERSION}"' in cuda_run
    cpu_run = " ".join(stages["build-cpu"].all("RUN"))
    assert "download.pytorch.org/whl/cpu" in " ".join(stages["build-cpu"].all("ARG")) + cpu_run


def test_env_volumes_and_ports(dockerfile, architecture_services, library_env_names) -> None:  # type: ignore[no-untyped-def]
    _, stages, _ = dockerfile
    env = _env(stages, "cpu")
    for name in env:
        if name.startswith("ACTIVEKD_"):
            assert name in library_env_names, f"ENV {name} is never read by the code"
        else:
            assert name in THIRD_PARTY_ENV, name
    assert env["HF_HUB_OFFLINE"] == "${HF_HUB_OFFLINE}", "HF_HUB_OFFLINE comes from a build ARG"
    volumes = json.loads(_effective(stages, "cpu", "VOLUME") or "[]")
    assert env["ACTIVEKD_STORE_URI"] in volumes
    for cache_var in ("HF_HOME", "TORCH_HOME", "ACTIVEKD_CACHE_DIR"):
        assert any(env[cache_var].startswith(v + "/") for v in volumes), cache_var
    exposed = {int(p) for p in (_effective(stages, "cpu", "EXPOSE") or "").split()}
    wanted = {
        int(s[k]) for s in architecture_services.values() for k in ("grpc_port", "metrics_port")
    }
    assert exposed == wanted


def test_dockerignore_keeps_only_what_the_build_copies(dockerfile) -> None:  # type: ignore[no-untyped-def]
    _, stages, _ = dockerfile
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def ignored(path: str) -> bool:
        result = False
        for pattern in patterns:
            negate = pattern.startswith("!")
            pat = pattern.lstrip("!").rstrip("/")
            if fnmatch.fnmatch(path, pat) or fnmatch.fnmatch(path, pat + "/*"):
                result = not negate
        return result

    sources = [
        src
        for s in stages.values()
        for c in s.all("COPY")
        if not c.startswith("--from")
        for src in c.split()[:-1]
    ]
    assert sources, "no COPY from the build context?"
    for src in sources:
        assert (REPO / src).exists(), f"COPY {src}: missing from the repository"
        assert not ignored(src), f"COPY {src} is excluded by .dockerignore"
    for heavy in (".venv/bin/python", ".git/HEAD", "tests/conftest.py", ".activekd/store/x.npy"):
        assert ignored(heavy), f"{heavy} would be sent to the Docker daemon"
    assert ignored("src/activekd/__pycache__/x.pyc")


def test_runtime_preloads_jemalloc_where_the_code_looks(dockerfile) -> None:  # type: ignore[no-untyped-def]
    """The image installs libjemalloc2, links it to the first path ``allocator`` searches and
    preloads that path, so ``ACTIVEKD_MALLOC=jemalloc`` (the default) holds in the container."""
    from activekd.server.allocator import DEFAULT_ALLOCATOR, JEMALLOC_PATHS

    _, stages, _ = dockerfile
    assert DEFAULT_ALLOCATOR == "jemalloc"
    for target in RUNTIME_TARGETS:
        env = _env(stages, target)
        assert env.get("LD_PRELOAD") == JEMALLOC_PATHS[0], env.get("LD_PRELOAD")
        runs = " ".join(r for s in _chain(stages, target) for r in s.all("RUN"))
        assert re.search(r"apt-get install [^;]*\blibjemalloc2\b", runs), runs
        link = re.search(r'ln -s "([^"]+)" (\S+);', runs)
        assert link is not None and link.group(2) == JEMALLOC_PATHS[0], runs
        assert link.group(1).endswith("-linux-gnu/libjemalloc.so.2")
