"""The pool store under faults, on a real selection service process: an upload the client cuts
mid-stream, a full disk (RLIMIT_FSIZE: writes past it fail EFBIG) and a read-only store each give
a clear status and leave no pool, no version dir, no partial file and no Redis bookkeeping."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from activekd.client import SelectionClient, make_channel
from activekd.server.interceptors import (
    ACCESS_DENIED_MESSAGE,
    STORE_FULL_MESSAGE,
    STORE_READ_ONLY_MESSAGE,
)
from activekd.v1 import selection_pb2, selection_pb2_grpc
from activekd.wire.tensors import to_proto
from tests.procs import RedisProcess, ServiceProcess

FSIZE = 256 * 1024  # bytes any one file of the "small disk" service may grow to


@pytest.fixture(scope="module")
def redis_proc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    server = RedisProcess(tmp_path_factory.mktemp("faults-redis")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def small_disk(
    redis_proc: RedisProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    """A selection service whose files may not grow past :data:`FSIZE`."""
    store = tmp_path_factory.mktemp("faults-store")
    svc = ServiceProcess("selection", redis_proc.url, str(store), rlimit_fsize=FSIZE).start()
    try:
        yield svc
    finally:
        svc.stop()


def _leftovers(store: Path, redis_proc: RedisProcess, top: str) -> dict[str, list[str]]:
    """What an upload of a pool under ``top/`` could leave: files, version dirs, Redis keys
    (an empty ``<pool id>`` parent dir may stay: it holds nothing and no reader lists it)."""
    root = store / top
    keys = [k.decode() for k in redis_proc.client().scan_iter(match=f"*{top}/*")]
    return {
        "paths": sorted(
            str(p.relative_to(store))
            for p in (root.rglob("*") if root.exists() else [])
            if p.is_file() or p.name.startswith("v-")
        ),
        "redis": sorted(keys),
    }


def _wait_empty(store: Path, redis_proc: RedisProcess, top: str) -> None:
    deadline = time.monotonic() + 10
    while (left := _leftovers(store, redis_proc, top)) != {"paths": [], "redis": []}:
        assert time.monotonic() < deadline, f"left behind: {left}"
        time.sleep(0.1)


def _pool_ids(svc: ServiceProcess) -> list[str]:
    with SelectionClient(svc.target, credentials=svc.credentials("admin")) as sel:
        return sorted(p.pool_id for p in sel.list_pools())


def test_an_upload_cut_after_two_chunks_leaves_no_pool_and_no_version_dir(
    small_disk: ServiceProcess, redis_proc: RedisProcess
) -> None:
    store = Path(small_disk.store_uri)
    before = _pool_ids(small_disk)
    images = np.random.default_rng(0).integers(0, 255, (64, 8, 8), dtype=np.uint8)
    seen_on_disk: list[str] = []

    def requests() -> Iterator[selection_pb2.UploadPoolRequest]:
        yield selection_pb2.UploadPoolRequest(
            header=selection_pb2.UploadPoolHeader(pool_id="cut/pool", num_items=64)
        )
        for offset in (0, 16):
            yield selection_pb2.UploadPoolRequest(
                chunk=selection_pb2.UploadPoolChunk(
                    offset=offset,
                    item_ids=[f"i{j}" for j in range(offset, offset + 16)],
                    arrays={"images": to_proto(images[offset : offset + 16])},
                )
            )
        deadline = time.monotonic() + 10  # the server has really written both chunks ...
        while len(list((store / "cut" / "pool").glob("v-*/ids-*.npy"))) < 2:
            assert time.monotonic() < deadline, "the server never wrote the two chunks"
            time.sleep(0.05)
        seen_on_disk.extend(
            str(p.relative_to(store)) for p in (store / "cut").rglob("*") if p.is_file()
        )
        raise RuntimeError("client died mid-upload")  # ... when the client goes away

    with make_channel(small_disk.target, credentials=small_disk.credentials("admin")) as channel:
        stub = selection_pb2_grpc.SelectionServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.UploadPool(requests(), timeout=30)
    assert info.value.code() in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNKNOWN)
    assert any(p.endswith("images.npy") for p in seen_on_disk), seen_on_disk
    _wait_empty(store, redis_proc, "cut")
    assert _pool_ids(small_disk) == before
    creds = small_disk.credentials("admin")
    with (
        SelectionClient(small_disk.target, credentials=creds) as sel,
        pytest.raises(grpc.RpcError) as missing,
    ):
        sel.describe_pool("cut/pool")
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    assert small_disk.proc is not None and small_disk.proc.poll() is None


def test_a_full_store_is_resource_exhausted_and_leaves_no_partial_file(
    small_disk: ServiceProcess, redis_proc: RedisProcess
) -> None:
    store = Path(small_disk.store_uri)
    assert small_disk.proc is not None
    pid = small_disk.proc.pid
    big = np.zeros((1024, 32, 32), dtype=np.uint8)  # one 1 MiB array file > FSIZE
    with SelectionClient(small_disk.target, credentials=small_disk.credentials("admin")) as sel:
        with pytest.raises(grpc.RpcError) as info:
            sel.upload_pool("full/pool", arrays={"images": big})
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert info.value.details() == STORE_FULL_MESSAGE
        _wait_empty(store, redis_proc, "full")
        assert "full/pool" not in _pool_ids(small_disk)
        # the same process still stores what fits
        small = sel.upload_pool("full/small", arrays={"images": big[:64]})
        assert small.num_items == 64
    assert small_disk.proc.poll() is None and small_disk.proc.pid == pid


def tmpfs_prefix(store: Path, size_bytes: int) -> tuple[str, ...]:
    """How to give the service a really small disk: a ``size_bytes`` tmpfs mounted on ``store``
    in a private user+mount namespace (no privileges needed). Writes past it fail ENOSPC, and a
    write into a hole of a sparse memory map is SIGBUS: the failure a full disk really gives,
    which RLIMIT_FSIZE (EFBIG at the size check) does not show. The test process sees the
    service's files under ``/proc/<pid>/root`` (:func:`seen_by`)."""
    unshare = shutil.which("unshare")
    script = 'mount -t tmpfs -o size="$1" tmpfs "$0" && shift && exec "$@"'
    if unshare:
        probe = subprocess.run(
            [unshare, "-rm", "sh", "-c", script, str(store), str(size_bytes), "true"],
            capture_output=True,
        )
        if probe.returncode == 0:
            return (unshare, "-rm", "sh", "-c", script, str(store), str(size_bytes))
    pytest.skip(
        "no user namespaces here (unshare -rm failed): no small tmpfs to fill; the full-disk "
        "status is still tested with RLIMIT_FSIZE above"
    )


def seen_by(svc: ServiceProcess, path: Path) -> Path:
    """``path`` as the running service sees it (inside its mount namespace)."""
    assert svc.proc is not None and svc.proc.poll() is None
    return Path(f"/proc/{svc.proc.pid}/root{path}")


def _read_only_prefix(store: Path) -> tuple[tuple[str, ...], str]:
    """How to make ``store`` read-only for the service: a read-only bind mount in a private
    user+mount namespace (no privileges needed), else chmod 0555 when not root."""
    unshare = shutil.which("unshare")
    if unshare:
        probe = subprocess.run(
            [
                unshare,
                "-rm",
                "sh",
                "-c",
                'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0"',
                str(store),
            ],
            capture_output=True,
        )
        if probe.returncode == 0:
            script = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"'
            return (unshare, "-rm", "sh", "-c", script, str(store)), "bind mount"
    if os.geteuid() != 0:
        store.chmod(0o555)
        return (), "chmod 0555"
    pytest.skip(
        "root without user namespaces: neither a read-only bind mount nor chmod stops writes; "
        "EROFS is mapped by tests/server/test_decode_and_limits.py::"
        "test_infrastructure_errors_map_without_paths_or_hosts"
    )


def test_a_read_only_store_is_failed_precondition_and_leaves_nothing(
    redis_proc: RedisProcess, tmp_path: Path
) -> None:
    store = tmp_path / "ro-store"
    store.mkdir()
    prefix, how = _read_only_prefix(store)
    svc = ServiceProcess("selection", redis_proc.url, str(store), command_prefix=prefix)
    try:
        svc.start()
        with SelectionClient(svc.target, credentials=svc.credentials("admin")) as sel:
            with pytest.raises(grpc.RpcError) as info:
                sel.upload_pool("ro/pool", arrays={"images": np.zeros((8, 4), np.uint8)})
            assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION, how
            # a read-only mount says so; a folder without write permission (the chmod fallback)
            # cannot be told from an unreadable file, so its message names neither
            want = STORE_READ_ONLY_MESSAGE if how == "bind mount" else ACCESS_DENIED_MESSAGE
            assert info.value.details() == want, how
            assert str(store) not in info.value.details()
            with pytest.raises(grpc.RpcError) as missing:
                sel.describe_pool("ro/pool")
            assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        assert list(store.iterdir()) == []
        assert list(redis_proc.client().scan_iter(match="*ro/*")) == []
        assert svc.proc is not None and svc.proc.poll() is None
    finally:
        svc.stop()
        store.chmod(0o755)


def test_a_really_full_disk_is_resource_exhausted_and_the_service_lives(
    redis_proc: RedisProcess, tmp_path: Path
) -> None:
    """The store is a 256 KiB tmpfs: a 1 MiB array is RESOURCE_EXHAUSTED (the pool store
    allocates a new file's blocks before mapping it; a sparse map would have killed the
    service with SIGBUS), nothing of it stays, and what fits is still stored."""
    store = tmp_path / "tiny-disk"
    store.mkdir()
    prefix = tmpfs_prefix(store, 256 * 1024)
    svc = ServiceProcess("selection", redis_proc.url, str(store), command_prefix=prefix)
    try:
        svc.start()
        big = np.ones((1024, 32, 32), dtype=np.uint8)
        with SelectionClient(svc.target, credentials=svc.credentials("admin")) as sel:
            with pytest.raises(grpc.RpcError) as info:
                sel.upload_pool("disk/big", arrays={"images": big})
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, info.value.details()
            assert info.value.details() == STORE_FULL_MESSAGE
            inside = seen_by(svc, store)
            deadline = time.monotonic() + 10
            while [p for p in inside.rglob("*") if p.is_file()]:
                assert time.monotonic() < deadline, list(inside.rglob("*"))
                time.sleep(0.1)
            assert list(redis_proc.client().scan_iter(match="*disk/*")) == []
            small = sel.upload_pool("disk/small", arrays={"images": big[:64]})
            assert small.num_items == 64
            (stored,) = inside.glob("disk/small/v-*/images.npy")
            np.testing.assert_array_equal(np.load(stored), big[:64])
        assert svc.proc is not None and svc.proc.poll() is None
    finally:
        svc.stop()
