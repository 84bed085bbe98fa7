"""Expanding the scene arguments: paths, URLs, glob patterns and lists of paths.

Patterns and lists work on local folders and in object storage alike
(``s3://bucket/prefix/*.tif``, ``gs://...``, ``/vsis3/...``): remote ones are
expanded and read with fsspec (s3fs, gcsfs), which take the clouds' standard
environment variables (``AWS_ENDPOINT_URL``...) as GDAL does (`geodet.remote`).
"""

from __future__ import annotations

import glob
import os
import posixpath
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from geodet import storage
from geodet.errors import InputError
from geodet.remote import VSI_PREFIXES, fsspec_url, is_remote

LIST_SUFFIXES = (".txt", ".lst")
PATTERN_CHARS = "*?["
STAC_SUFFIX = ".json"  # a STAC item, item collection or catalog


@dataclass(frozen=True)
class SceneRef:
    """A scene to read, and what its source says of it besides the pixels."""

    path: str
    item: str | None = None  # the STAC item's id: the scene's name in the output
    acquired: datetime | None = None  # the STAC item's datetime
    signature: str | None = None  # this version of it (`geodet.incremental.signature`)


def _remote_glob(pattern: str) -> list[str]:
    """The objects matching a remote pattern, as URLs of the pattern's own kind."""
    url = fsspec_url(pattern)
    if not url.startswith(("s3://", "gs://")):
        raise InputError(f"cannot expand the pattern {pattern!r}: patterns work on local "
                         "folders, s3:// and gs://; list the URLs in a .txt file instead")
    fs, path = storage.filesystem(url)
    try:
        found = sorted(fs.glob(path))
    except (OSError, ValueError) as e:  # PermissionError, FileNotFoundError...
        raise InputError(f"cannot list {pattern}: {type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else 'refused'}") from None
    scheme = url.split("://", 1)[0]
    prefix = VSI_PREFIXES[scheme] if pattern.startswith("/vsi") else f"{scheme}://"
    return [prefix + f.removeprefix(f"{scheme}://") for f in found]


def _read_lines(path: str) -> list[str]:
    try:
        if is_remote(path):
            return storage.read_bytes(fsspec_url(path)).decode("utf-8").splitlines()
        with open(path, encoding="utf-8") as f:
            return f.read().splitlines()
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise InputError(f"cannot read the scene list {path}: {e}") from None


def _from_list(path: str) -> list[str]:
    """Paths or URLs in a text file, one a line; ``#`` starts a comment. Relative
    paths are relative to the list file (local or remote)."""
    items = [ln.split("#", 1)[0].strip() for ln in _read_lines(path)]
    items = [ln for ln in items if ln]
    if not items:
        raise InputError(f"the scene list {path} names no scene")
    base = posixpath.dirname(path) if is_remote(path) else os.path.dirname(
        os.path.abspath(path))
    return [relative_to(base, ln) for ln in items]


def relative_to(base: str, item: str) -> str:
    """``item`` as written in a file in the folder ``base`` (local, or a URL's):
    relative paths are relative to that folder; absolute paths and URLs stay."""
    if is_remote(item) or os.path.isabs(item):
        return item
    if is_remote(base):
        return posixpath.join(base, item)
    return os.path.normpath(os.path.join(base, item))


def _is_pattern(item: str) -> bool:
    """Wildcards outside an HTTP URL (where ``?`` starts a query)."""
    return any(c in item for c in PATTERN_CHARS) and not fsspec_url(item).startswith(
        ("http://", "https://"))


def _is_list(item: str) -> bool:
    return item.lower().endswith(LIST_SUFFIXES) and (is_remote(item) or os.path.isfile(item))


def expand_scenes(items: Iterable[str | os.PathLike],
                  asset: str | None = None) -> list[SceneRef]:
    """Scenes from command-line style arguments, in order, without repeats.

    An argument is a path or URL, a glob pattern (``tiles/*.tif``, ``**`` for
    sub-folders, ``s3://bucket/prefix/*.tif``), a ``.txt`` / ``.lst`` file (local
    or remote) listing paths or URLs, or a STAC document (``.json``: see
    `geodet.stac`, which reads each item's ``asset``).
    """
    out: list[str | SceneRef] = []
    for item in map(os.fspath, items):
        if _is_pattern(item):
            found = _remote_glob(item) if is_remote(item) else sorted(
                glob.glob(item, recursive=True))
            if not found:
                raise InputError(f"no file matches the pattern {item!r}")
            out.extend(found)
        elif _is_list(item):
            out.extend(_from_list(item))
        elif item.lower().split("?", 1)[0].endswith(STAC_SUFFIX):
            from geodet.stac import stac_scenes  # here: geodet.stac imports this module

            out.extend(stac_scenes(item, asset))
        else:
            out.append(item)
    unique: dict[str, SceneRef] = {}
    for ref in out:
        ref = ref if isinstance(ref, SceneRef) else SceneRef(ref)
        unique.setdefault(ref.path, ref)
    return list(unique.values())
