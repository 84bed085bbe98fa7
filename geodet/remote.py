"""Object storage and HTTP: URLs to GDAL paths, and GDAL configured from the standard
environment variables of each cloud.

geodet reads ``s3://``, ``gs://`` and ``http(s)://`` URLs (and GDAL's own ``/vsis3/``,
``/vsigs/``, ``/vsicurl/`` paths). GDAL is configured for them from the variables every
cloud tool reads (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_DEFAULT_REGION``, ``AWS_ENDPOINT_URL`` for S3-compatible stores such as MinIO,
``GOOGLE_APPLICATION_CREDENTIALS``) plus settings that make range reads of
Cloud-Optimised GeoTIFFs cheap. The configuration is worked out once, in the driver,
from its environment, travels with each remote scene, and every open and read of the
scene happens in `environment`: a Ray worker started before the variables were set,
or on another machine, reads with the same endpoint and credentials.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from urllib.parse import urlsplit

import rasterio

#: URL scheme -> GDAL virtual file system.
VSI_PREFIXES = {"s3": "/vsis3/", "gs": "/vsigs/", "http": "/vsicurl/", "https": "/vsicurl/"}

#: Cheap range reads of (Cloud-Optimised) GeoTIFFs: no directory listing on open
#: (no probing for side-car files), neighbouring ranges merged into one request, a
#: per-file block cache, retries of transient failures, and a timeout so that a
#: server that does not answer is an error, not a hang.
GDAL_DEFAULTS = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "GDAL_HTTP_MULTIRANGE": "YES",
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
    "VSI_CACHE": "TRUE",
    "VSI_CACHE_SIZE": str(64 << 20),
    "GDAL_HTTP_MAX_RETRY": "3",
    "GDAL_HTTP_RETRY_DELAY": "1",
    "GDAL_HTTP_TIMEOUT": "60",
    "GDAL_HTTP_CONNECTTIMEOUT": "20",
}

#: Variables GDAL reads under their standard names: passed on as they are.
PASSED_ON = ("AWS_SESSION_TOKEN", "AWS_REGION", "AWS_NO_SIGN_REQUEST", "AWS_REQUEST_PAYER",
             "GOOGLE_APPLICATION_CREDENTIALS", "GS_NO_SIGN_REQUEST")
#: Passed on too, but only through the process environment (rasterio refuses them as
#: options).
KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


def is_remote(path: str) -> bool:
    """A URL or a GDAL virtual file system path, or a VRT document (`geodet.mosaic`)
    over such paths."""
    if path.startswith("<VRTDataset"):
        return ">/vsi" in path
    return "://" in path or path.startswith("/vsi")


def gdal_path(path: str) -> str:
    """``s3://b/k`` -> ``/vsis3/b/k``, ``gs://`` -> ``/vsigs/``, ``http(s)://`` ->
    ``/vsicurl/http(s)://``; anything else unchanged."""
    scheme = urlsplit(path).scheme if "://" in path else ""
    if scheme in ("s3", "gs"):
        return VSI_PREFIXES[scheme] + path.split("://", 1)[1]
    if scheme in ("http", "https"):
        return VSI_PREFIXES[scheme] + path
    return path


def fsspec_url(path: str) -> str:
    """The URL fsspec lists for a GDAL path: ``/vsis3/b/k`` -> ``s3://b/k``."""
    for scheme in ("s3", "gs"):
        prefix = VSI_PREFIXES[scheme]
        if path.startswith(prefix):
            return f"{scheme}://{path[len(prefix):]}"
    return path.removeprefix("/vsicurl/")


def gdal_config(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """GDAL configuration for remote reads from the standard environment variables.

    ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` (``http://host:port``) becomes
    ``AWS_S3_ENDPOINT``, ``AWS_HTTPS`` and path-style addressing, as S3-compatible
    stores need; ``AWS_DEFAULT_REGION`` becomes ``AWS_REGION``. GDAL options the
    environment sets itself (``AWS_S3_ENDPOINT``, ``GDAL_HTTP_TIMEOUT``...) are left
    to it.
    """
    derived = dict(GDAL_DEFAULTS)
    if environ.get("AWS_DEFAULT_REGION"):
        derived["AWS_REGION"] = environ["AWS_DEFAULT_REGION"]
    endpoint = environ.get("AWS_ENDPOINT_URL_S3") or environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        url = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
        derived.update(AWS_S3_ENDPOINT=url.netloc + url.path.rstrip("/"),
                       AWS_HTTPS="NO" if url.scheme == "http" else "YES",
                       AWS_VIRTUAL_HOSTING="FALSE")
    return {**{k: environ[k] for k in (*KEYS, *PASSED_ON) if environ.get(k)},
            **{k: v for k, v in derived.items() if k not in environ}}


def environment(config: Mapping[str, str]) -> AbstractContextManager:
    """Where to open and read a scene with a configuration from `gdal_config`: GDAL's
    options for this thread, inside the block. Access keys go to the process
    environment, only where it has none: a worker's own keys are kept."""
    if not config:
        return nullcontext()
    for key in KEYS:
        if key in config:
            os.environ.setdefault(key, config[key])
    return rasterio.Env(**{k: v for k, v in config.items() if k not in KEYS})
