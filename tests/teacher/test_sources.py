"""Confined inputs: ScorePool sources resolve under the policy's roots and allowed schemes only,
and a refusal says nothing about the outside path (not whether it exists, not what it holds)."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from activekd.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
)
from activekd.store import PoolStore
from activekd.teacher.pool_job import PoolScorer, resolve_source
from activekd.teacher.sources import OUTSIDE_ROOTS, SourcePolicy, uri_scheme
from tests.store.test_object_storage import BUCKET, options, s3_endpoint  # noqa: F401


def _png(value: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8), value, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def layout(tmp_path: Path) -> dict[str, Path]:
    """``root`` (allowed) holding images, a list and an array; ``outside`` next to it."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "imgs").mkdir(parents=True)
    outside.mkdir()
    for i in range(3):
        (root / "imgs" / f"{i}.png").write_bytes(_png(i))
    (root / "list.txt").write_text("imgs/0.png\nimgs/1.png\n")
    np.save(root / "a.npy", np.zeros((4, 8, 8), np.uint8))
    (outside / "secret.txt").write_text("top-secret-line\nsecond-secret-line\n")
    (outside / "x.png").write_bytes(_png(9))
    np.save(outside / "b.npy", np.zeros((4, 8, 8), np.uint8))
    return {"root": root, "outside": outside}


@pytest.fixture
def policy(layout: dict[str, Path]) -> SourcePolicy:
    return SourcePolicy((layout["root"],))


def _denied(policy: SourcePolicy, store: PoolStore, kind: str, ref: str) -> str:
    with pytest.raises(PermissionDenied) as exc:
        resolve_source(kind, ref, 0, store, policy)
    assert exc.value.code == "PERMISSION_DENIED" and exc.value.field == f"source.{kind}"
    return str(exc.value)


def test_sources_under_a_root_resolve(
    policy: SourcePolicy, layout: dict[str, Path], pool_store: PoolStore
) -> None:
    root = layout["root"]
    assert resolve_source("folder", str(root / "imgs"), 0, pool_store, policy).total == 3
    assert resolve_source("file_list", str(root / "list.txt"), 0, pool_store, policy).total == 2
    assert resolve_source("array_uri", str(root / "a.npy"), 0, pool_store, policy).total == 4
    src = resolve_source("array_uri", f"file://{root / 'a.npy'}", 0, pool_store, policy)
    assert src.total == 4


@pytest.mark.parametrize("kind", ["folder", "file_list", "array_uri"])
def test_paths_outside_every_root_are_denied(
    policy: SourcePolicy, layout: dict[str, Path], pool_store: PoolStore, kind: str
) -> None:
    root, outside = layout["root"], layout["outside"]
    target = {
        "folder": outside,
        "file_list": outside / "secret.txt",
        "array_uri": outside / "b.npy",
    }
    for ref in (
        str(target[kind]),  # absolute, outside
        f"{root}/../outside/{target[kind].name if kind != 'folder' else ''}",  # `..` out
        f"{root}/imgs/../0.png",  # `..` is refused even when it stays inside
        "/etc",
        "/",
    ):
        assert OUTSIDE_ROOTS in _denied(policy, pool_store, kind, ref)


@pytest.mark.parametrize("kind", ["folder", "file_list", "array_uri"])
def test_denial_does_not_tell_whether_the_outside_path_exists(
    policy: SourcePolicy, layout: dict[str, Path], pool_store: PoolStore, kind: str
) -> None:
    outside = layout["outside"]
    (outside / "sub").mkdir()
    # an existing and a missing path of the same length, so the shortened echo is alike too
    there, missing = {
        "folder": ("sub", "nop"),
        "file_list": ("secret.txt", "absent.txt"),
        "array_uri": ("b.npy", "c.npy"),
    }[kind]
    a = _denied(policy, pool_store, kind, str(outside / there)).replace(there, "<ref>")
    b = _denied(policy, pool_store, kind, str(outside / missing)).replace(missing, "<ref>")
    assert a == b


def test_symlinks_out_of_a_root_are_denied(
    policy: SourcePolicy, layout: dict[str, Path], pool_store: PoolStore
) -> None:
    root, outside = layout["root"], layout["outside"]
    (root / "out-dir").symlink_to(outside, target_is_directory=True)
    (root / "out.npy").symlink_to(outside / "b.npy")
    (root / "out-list.txt").symlink_to(outside / "secret.txt")
    _denied(policy, pool_store, "folder", str(root / "out-dir"))
    _denied(policy, pool_store, "array_uri", str(root / "out.npy"))
    msg = _denied(policy, pool_store, "file_list", str(root / "out-list.txt"))
    assert "secret" not in msg.replace("out-list", "")
    # an image inside an allowed folder that links outside: the whole source is refused
    (root / "imgs" / "3.png").symlink_to(outside / "x.png")
    with pytest.raises(PermissionDenied, match=r"3\.png"):
        resolve_source("folder", str(root / "imgs"), 0, pool_store, policy)
    # a symlink that stays inside a root is fine
    (root / "inside-link").symlink_to(root / "imgs" / "0.png")
    (root / "list2.txt").write_text("inside-link\n")
    assert resolve_source("file_list", str(root / "list2.txt"), 0, pool_store, policy).total == 1


def test_a_file_list_naming_a_host_file_leaks_none_of_its_lines(
    policy: SourcePolicy, layout: dict[str, Path], pool_store: PoolStore
) -> None:
    outside = layout["outside"]
    msg = _denied(policy, pool_store, "file_list", str(outside / "secret.txt"))
    assert "secret-line" not in msg
    if Path("/etc/hostname").is_file():
        msg = _denied(policy, pool_store, "file_list", "/etc/hostname")
        host = Path("/etc/hostname").read_text().strip()
        assert not host or host not in msg.replace("/etc/hostname", "")


def test_file_list_entries_are_confined_and_shown_short(
    policy: SourcePolicy, layout: dict[str, Path], pool_store: PoolStore
) -> None:
    root, outside = layout["root"], layout["outside"]
    listing = root / "bad-list.txt"
    listing.write_text(f"imgs/0.png\n{outside / 'x.png'}\n")
    with pytest.raises(PermissionDenied, match="data root"):
        resolve_source("file_list", str(listing), 0, pool_store, policy)
    listing.write_text("imgs/0.png\n../outside/x.png\n")
    with pytest.raises(PermissionDenied):
        resolve_source("file_list", str(listing), 0, pool_store, policy)
    # missing entries: a count and a short first name, not the list's lines
    long_name = "gone-" + "y" * 300 + ".png"
    listing.write_text(f"imgs/0.png\n{long_name}\nalso-gone.png\n")
    with pytest.raises(NotFound) as exc:
        resolve_source("file_list", str(listing), 0, pool_store, policy)
    assert "2 file(s)" in str(exc.value) and "also-gone" not in str(exc.value)
    assert len(str(exc.value)) < 250
    listing.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(InvalidArgument, match="UTF-8"):
        resolve_source("file_list", str(listing), 0, pool_store, policy)


def test_schemes_are_allow_listed(
    policy: SourcePolicy, layout: dict[str, Path], pool_store: PoolStore
) -> None:
    for ref in (
        "http://127.0.0.1:1/a.npy",
        "https://example.com/a.npy",
        "s3://bucket/a.npy",
        "gs://bucket/a.npy",
        "memory://a.npy",
        "simplecache::s3://bucket/a.npy",
        "://x",
    ):
        msg = _denied(policy, pool_store, "array_uri", ref)
        assert "ACTIVEKD_SOURCE_SCHEMES" in msg
    # folders and file lists are local whatever the schemes
    wide = SourcePolicy((layout["root"],), frozenset({"file", "s3"}))
    with pytest.raises(PermissionDenied):
        resolve_source("folder", "s3://bucket/imgs", 0, pool_store, wide)


def test_an_allowed_scheme_reads_object_storage_by_range(
    layout: dict[str, Path],
    pool_store: PoolStore,
    options: dict[str, Any],  # noqa: F811
    s3_endpoint: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A real S3-compatible server (moto_server): an allowed scheme is read through fsspec,
    rows by byte range (the array is never loaded whole), and a rewritten object is a new
    source; schemes not listed stay refused."""
    import s3fs

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)  # request sources carry no options
    fs = s3fs.S3FileSystem(**options)
    images = np.random.default_rng(0).integers(0, 256, (5, 8, 8), dtype=np.uint8)
    with fs.open(f"{BUCKET}/src/pool.npy", "wb") as fh:
        np.save(fh, images)
    wide = SourcePolicy.from_settings(pool_store.root, str(layout["root"]), "file,s3")
    src = resolve_source("array_uri", f"s3://{BUCKET}/src/pool.npy", 0, pool_store, wide)
    assert src.total == 5
    np.testing.assert_array_equal(src.load(1, 4), images[1:4])
    reads: list[tuple[int, int]] = []
    import fsspec

    used = fsspec.core.url_to_fs(f"s3://{BUCKET}/src/pool.npy")[0]  # fsspec's cached instance
    real = used.cat_file

    def counting(path: str, start: int, end: int, **kw: Any) -> Any:
        reads.append((start, end))
        return real(path, start=start, end=end, **kw)

    monkeypatch.setattr(used, "cat_file", counting)
    np.testing.assert_array_equal(src.load(4, 5), images[4:5])
    assert len(reads) == 1 and reads[0][1] - reads[0][0] == 64  # one row of 8 x 8 bytes
    with fs.open(f"{BUCKET}/src/pool.npy", "wb") as fh:
        np.save(fh, images[::-1].copy())
    again = resolve_source("array_uri", f"s3://{BUCKET}/src/pool.npy", 0, pool_store, wide)
    assert again.signature != src.signature
    # the change key is the version mark, not str(info): a listing and a HEAD describe the same
    # object with other keys
    from activekd.teacher.pool_job import _object_version

    (listed,) = [e for e in used.ls(f"{BUCKET}/src", detail=True) if e["name"].endswith("pool.npy")]
    head = used.info(f"{BUCKET}/src/pool.npy", refresh=True)
    assert str(listed) != str(head)
    assert _object_version(listed) == _object_version(head) and "ETag=" in _object_version(head)
    with pytest.raises(NotFound):
        resolve_source("array_uri", f"s3://{BUCKET}/src/none.npy", 0, pool_store, wide)
    fs.rm(f"{BUCKET}/src/pool.npy")  # gone while a job reads it: not a retry
    with pytest.raises(FailedPrecondition, match="gone from object storage"):
        again.load(0, 2)
    buf = io.BytesIO()
    np.save(buf, images)
    fs.pipe(f"{BUCKET}/src/short.npy", buf.getvalue()[:-10])  # truncated upload
    with pytest.raises(InvalidArgument, match=r"could not be read as \.npy"):
        resolve_source("array_uri", f"s3://{BUCKET}/src/short.npy", 0, pool_store, wide)
    buf = io.BytesIO()
    np.save(buf, np.zeros((4, 8), np.uint8))  # rows of one pixel line: not images
    fs.pipe(f"{BUCKET}/src/flat.npy", buf.getvalue())
    with pytest.raises(InvalidArgument, match=r"shape \(4, 8\) must be \(B, H, W\)"):
        resolve_source("array_uri", f"s3://{BUCKET}/src/flat.npy", 0, pool_store, wide)
    with pytest.raises(PermissionDenied):  # still only the listed ones
        resolve_source("array_uri", "gs://bucket/pool.npy", 0, pool_store, wide)


def test_row_cap(policy: SourcePolicy, layout: dict[str, Path], pool_store: PoolStore) -> None:
    root = layout["root"]
    capped = SourcePolicy((root,), max_rows=2)
    with pytest.raises(ResourceExhausted, match="ACTIVEKD_MAX_POOL_ROWS"):
        resolve_source("folder", str(root / "imgs"), 0, pool_store, capped)
    with pytest.raises(ResourceExhausted, match="ACTIVEKD_MAX_POOL_ROWS"):
        resolve_source("array_uri", str(root / "a.npy"), 0, pool_store, capped)
    (root / "long.txt").write_text("".join(f"imgs/{i % 3}.png\n" for i in range(3)))
    with pytest.raises(ResourceExhausted, match="more than 2"):
        resolve_source("file_list", str(root / "long.txt"), 0, pool_store, capped)
    assert resolve_source("folder", str(root / "imgs"), 2, pool_store, capped).total == 2


def test_default_policy_and_settings(pool_store: PoolStore, tmp_path: Path) -> None:
    import activekd.data
    from activekd.data.fashion_mnist import data_dir

    default = SourcePolicy.default(pool_store.root)
    assert default.schemes == frozenset({"file"}) and default.max_rows == 0
    assert Path(os.path.realpath(pool_store.root)) in default.roots
    assert Path(os.path.realpath(data_dir())) in default.roots
    assert Path(activekd.data.__file__).resolve().parent in default.roots
    # a policy set from text: os.pathsep-separated roots replace the defaults
    a, b = tmp_path / "a", tmp_path / "b"
    custom = SourcePolicy.from_settings(pool_store.root, f"{a}{os.pathsep}{b}", "s3, GS", 7)
    assert custom.roots == (a.resolve(), b.resolve())
    assert custom.schemes == frozenset({"file", "s3", "gs"}) and custom.max_rows == 7
    assert SourcePolicy.from_settings(pool_store.root, "", "").roots == default.roots
    # the pool scorer falls back to the default policy of its store
    scorer = PoolScorer(pool_store, cache_files=None)  # type: ignore[arg-type]
    assert scorer.policy == default


def test_uri_scheme() -> None:
    assert uri_scheme("/a/b.npy") is None and uri_scheme("a:b.npy") is None
    assert uri_scheme("file:///a.npy") == "file" and uri_scheme("S3://b/k") == "s3"
    assert uri_scheme("simplecache::s3://b/k") == "" and uri_scheme("://x") == ""


def test_messages_show_only_a_short_prefix(policy: SourcePolicy, pool_store: PoolStore) -> None:
    ref = "/outside/" + "z" * 5000
    msg = _denied(policy, pool_store, "folder", ref)
    assert len(msg) < 200 and "(5009 chars)" in msg
