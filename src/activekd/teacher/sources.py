"""Which host paths and URIs a request may make the teacher read: one rule for every caller.

A ScorePool source (``folder``, ``file_list`` and each file it names, ``array_uri``) is resolved
through a :class:`SourcePolicy` before anything is opened, so the service, the CLI and a batch
job share one confinement rule:

- a local path must resolve (symlinks followed, ``..`` refused outright) under one of the
  policy's **roots**: ``ACTIVEKD_DATA_ROOTS`` (``os.pathsep``-separated) when set, else the pool
  store, the Fashion-MNIST folder (``ACTIVEKD_FASHION_MNIST_DIR`` or the Debian path) and the data
  shipped in the package;
- a URI must use an allow-listed **scheme**: local files (plain paths and ``file://``) always,
  others (``s3``, ``gs``, ``http``, ``https``...) only when ``ACTIVEKD_SOURCE_SCHEMES`` names them;
  chained fsspec URIs (``a::b://...``) are refused.

A refusal is :class:`~activekd.errors.PermissionDenied`, raised before the path is looked at
(no ``stat``, no read), so its message is the same whether the outside path exists or not, and
it shows at most a short prefix of what the caller sent.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from activekd.errors import SHOWN_CHARS, PermissionDenied, shown

#: The end of every "outside the roots" message (tests and docs match on it).
OUTSIDE_ROOTS = "is not under an allowed data root (ACTIVEKD_DATA_ROOTS)"
#: Schemes that mean "a local file".
LOCAL_SCHEMES = frozenset({"file"})
#: Characters of a folder or file-list entry a message shows.
ENTRY_CHARS = 32

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*)://")


def uri_scheme(ref: str) -> str | None:
    """The lower-cased scheme of ``ref`` (``"file"`` for ``file://...``), None for a plain path;
    ``""`` when ``ref`` looks like a URI but has no scheme this module can name (refused)."""
    if "::" in ref:
        return ""  # fsspec chaining: refused whatever the parts are
    m = _SCHEME.match(ref)
    if m:
        return m.group(1).lower()
    return "" if "://" in ref else None


def _parse_roots(text: str) -> tuple[Path, ...]:
    return tuple(Path(p) for p in text.split(os.pathsep) if p.strip())


def _parse_schemes(text: str) -> frozenset[str]:
    return frozenset(s.strip().lower() for s in text.split(",") if s.strip())


@dataclass(frozen=True)
class SourcePolicy:
    """Roots a request's local paths must resolve under, the URI schemes it may use, and the
    most rows one source may hold (``0``: no cap)."""

    roots: tuple[Path, ...]
    schemes: frozenset[str] = field(default=LOCAL_SCHEMES)
    max_rows: int = 0

    def __post_init__(self) -> None:
        resolved = tuple(Path(os.path.realpath(Path(r).expanduser())) for r in self.roots)
        object.__setattr__(self, "roots", resolved)
        object.__setattr__(self, "schemes", frozenset(self.schemes) | LOCAL_SCHEMES)

    # construction -------------------------------------------------------------------------
    @staticmethod
    def default_roots(store_root: Path) -> tuple[Path, ...]:
        """The pool store, the Fashion-MNIST folder and the package's shipped data."""
        import activekd.data
        from activekd.data.fashion_mnist import data_dir

        return (Path(store_root), data_dir(), Path(activekd.data.__file__).resolve().parent)

    @classmethod
    def default(cls, store_root: Path) -> SourcePolicy:
        """Local files under :meth:`default_roots` only."""
        return cls(cls.default_roots(store_root))

    @classmethod
    def from_settings(
        cls, store_root: Path, data_roots: str = "", schemes: str = "file", max_rows: int = 0
    ) -> SourcePolicy:
        """From the settings' text: ``data_roots`` (``os.pathsep``-separated; empty: the
        defaults), ``schemes`` (comma-separated) and ``max_rows``."""
        roots = _parse_roots(data_roots) or cls.default_roots(store_root)
        return cls(roots, _parse_schemes(schemes), max(0, int(max_rows)))

    # checks -------------------------------------------------------------------------------
    def _outside(self, ref: str, field: str, limit: int = SHOWN_CHARS) -> PermissionDenied:
        return PermissionDenied(f"{field} {shown(ref, limit)} {OUTSIDE_ROOTS}", field=field)

    def _under_roots(self, path: Path) -> bool:
        return any(path.is_relative_to(root) for root in self.roots)

    def _resolve(self, label: str, path: Path, field: str, limit: int = SHOWN_CHARS) -> Path:
        """``path`` with symlinks followed when it stays under a root; PermissionDenied showing
        ``label`` otherwise. Nothing here opens or stats the target itself, and the message is
        the same whether it exists or not."""
        if "\x00" in str(path) or ".." in path.parts:
            raise self._outside(label, field, limit)
        try:
            resolved = Path(os.path.realpath(path.expanduser()))
        except (OSError, ValueError, RuntimeError):
            raise self._outside(label, field, limit) from None
        if not self._under_roots(resolved):
            raise self._outside(label, field, limit)
        return resolved

    def local_path(self, ref: str, field: str) -> Path:
        """The resolved local path ``ref`` names (a plain path or ``file://``), checked against
        the roots before anything is opened; PermissionDenied otherwise (also for any other
        scheme: folders and file lists are local)."""
        scheme = uri_scheme(ref)
        if scheme not in (None, "file"):
            raise PermissionDenied(
                f"{field} {shown(ref)} must be a local path under an allowed data root "
                "(ACTIVEKD_DATA_ROOTS)",
                field=field,
            )
        text = ref[len("file://") :] if scheme == "file" else ref
        return self._resolve(ref, Path(text), field)

    def check_uri(self, ref: str, field: str) -> str:
        """``ref`` when its scheme is allow-listed (a remote URI for fsspec), PermissionDenied
        otherwise. Local refs go through :meth:`local_path` instead."""
        scheme = uri_scheme(ref)
        if scheme is None or scheme == "file":
            return str(self.local_path(ref, field))
        if scheme == "" or scheme not in self.schemes:
            raise PermissionDenied(
                f"{field} {shown(ref)} uses a URI scheme this service does not read; allowed: "
                f"{', '.join(sorted(self.schemes))} (ACTIVEKD_SOURCE_SCHEMES)",
                field=field,
            )
        return ref

    def check_file(self, path: Path, field: str, shown_as: str | None = None) -> Path:
        """``path`` (an entry of a folder or a file list) resolved, symlinks followed, when it
        stays under a root; PermissionDenied showing at most 32 chars of ``shown_as`` (default:
        the file name) otherwise."""
        label = shown_as if shown_as is not None else path.name
        return self._resolve(label, path, f"{field} entry", ENTRY_CHARS)


__all__ = ["ENTRY_CHARS", "LOCAL_SCHEMES", "OUTSIDE_ROOTS", "SourcePolicy", "uri_scheme"]
