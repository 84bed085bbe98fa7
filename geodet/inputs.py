"""Expanding the scene arguments: paths, URLs, glob patterns and lists of paths."""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable

from geodet.errors import InputError

LIST_SUFFIXES = (".txt", ".lst")


def _is_remote(item: str) -> bool:
    return "://" in item or item.startswith("/vsi")


def _from_list(path: str) -> list[str]:
    """Paths or URLs in a text file, one a line; ``#`` starts a comment. Relative
    paths are relative to the list file."""
    base = os.path.dirname(os.path.abspath(path))
    try:
        with open(path, encoding="utf-8") as f:
            lines = [ln.split("#", 1)[0].strip() for ln in f]
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read the scene list {path}: {e}") from None
    items = [ln for ln in lines if ln]
    if not items:
        raise InputError(f"the scene list {path} names no scene")
    return [ln if _is_remote(ln) or os.path.isabs(ln) else os.path.join(base, ln)
            for ln in items]


def expand_scenes(items: Iterable[str | os.PathLike]) -> list[str]:
    """Scene paths from command-line style arguments, in order, without repeats.

    An argument is a path or GDAL URL, a glob pattern (``tiles/*.tif``, ``**`` for
    sub-folders), or a ``.txt`` / ``.lst`` file listing paths or URLs.
    """
    out: list[str] = []
    for item in map(os.fspath, items):
        if not _is_remote(item) and any(c in item for c in "*?["):
            found = sorted(glob.glob(item, recursive=True))
            if not found:
                raise InputError(f"no file matches the pattern {item!r}")
            out.extend(found)
        elif item.lower().endswith(LIST_SUFFIXES) and os.path.isfile(item):
            out.extend(_from_list(item))
        else:
            out.append(item)
    return list(dict.fromkeys(out))
