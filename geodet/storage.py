"""Object storage through fsspec: models read from URLs, finished outputs uploaded.

A location with a scheme (``s3://bucket/key``, ``gs://...``, ``https://...``, any
protocol fsspec knows) is a URL; anything else is a local path. Clients are set up
by their own standard environment only (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``,
``AWS_PROFILE``, instance profiles, ``GOOGLE_APPLICATION_CREDENTIALS``...), the same
credentials GDAL uses to read ``/vsis3/`` scenes. Every failure a user can fix
(unknown scheme, missing client library, no credentials, no bucket) is an
`InputError`.
"""

from __future__ import annotations

import os
from pathlib import Path

import fsspec
from fsspec.spec import AbstractFileSystem

from geodet.errors import GeodetError, InputError, one_line


def is_url(location: str | os.PathLike) -> bool:
    """True for ``scheme://...`` locations other than ``file://``."""
    text = os.fspath(location)
    return "://" in text and not text.startswith("file://")


def filesystem(url: str) -> tuple[AbstractFileSystem, str]:
    """The fsspec file system of ``url`` and the path in it; setup errors as `InputError`."""
    try:
        # A fresh client each time: the environment (endpoint, credentials) may change
        # between runs in one process, and fsspec would reuse a cached one.
        return fsspec.core.url_to_fs(url, skip_instance_cache=True)
    except (ImportError, ValueError) as e:  # "Install s3fs to access S3", unknown protocol
        raise InputError(f"cannot open {url}: {e}") from None


def _unreachable(url: str, e: Exception) -> InputError:
    return InputError(f"{one_line(f'cannot reach {url}', e, 300)}: check the URL and the "
                      "credentials (AWS_* or GOOGLE_* variables, instance profile)")


def read_bytes(url: str) -> bytes:
    """The whole object at ``url``."""
    fs, path = filesystem(url)
    try:
        return fs.cat_file(path)
    except FileNotFoundError:
        raise InputError(f"not found: {url}: check the URL") from None
    except Exception as e:  # clients raise their own types (botocore, aiohttp...)
        raise _unreachable(url, e) from None


def exists(url: str) -> bool:
    fs, path = filesystem(url)
    try:
        return fs.exists(path)
    except Exception as e:
        raise _unreachable(url, e) from None


def check_writable(url: str) -> None:
    """Fail early when the container of ``url`` (its bucket) does not exist or cannot
    be reached; uploading itself is only tried once the output is complete."""
    fs, path = filesystem(url)
    bucket = path.split("/", 1)[0]
    try:
        found = fs.exists(bucket)
    except Exception as e:
        raise _unreachable(url, e) from None
    if not found:
        raise InputError(f"the bucket of {url} does not exist (or these credentials cannot "
                         "see it): create it first")


def upload(local: Path, url: str) -> None:
    """Copy a finished local file to ``url``. Object stores make the object visible
    only once the upload is complete, so a reader never sees half of it."""
    fs, path = filesystem(url)
    try:
        fs.put_file(os.fspath(local), path)
    except Exception as e:
        raise GeodetError(one_line(f"upload to {url} failed", e)) from None


def download(url: str, local: Path) -> bool:
    """Copy ``url`` to ``local``; False if there is no such object."""
    fs, path = filesystem(url)
    try:
        fs.get_file(path, os.fspath(local))
    except FileNotFoundError:
        return False
    return True


def remove(url: str) -> None:
    """Delete ``url`` if it exists."""
    fs, path = filesystem(url)
    if fs.exists(path):
        fs.rm_file(path)
