"""Remote scenes against real servers on loopback: a Cloud-Optimised GeoTIFF over HTTP
range requests (bytes counted), moto's S3-compatible server configured only by the
standard AWS variables (patterns and list files expanded there), and one-line errors
for what cannot be read, before anything runs."""

from __future__ import annotations

import socket

import boto3
import numpy as np
import pytest
import rasterio.shutil
from rasterio.transform import from_origin

import geodet
from geodet.errors import InputError
from geodet.remote import gdal_config, gdal_path
from tests.helpers import GSD, ORIGIN, pixel_boxes, run_error, write_tif

BUCKET = "geodet-data"
SQUARES = [(20, 30), (150, 90), (300, 310), (420, 200)]


TRANSFORM = from_origin(*ORIGIN, GSD, GSD)  # write_tif's default
EXPECTED = sorted([x, y, x + 12, y + 12] for x, y in SQUARES)


def bounds(result) -> list[list[int]]:
    return sorted(pixel_boxes(result, TRANSFORM).tolist())


def noisy_scene(path, size=512, seed=0):
    """Dark noise (so the file does not compress away) with bright 12 px squares."""
    data = np.random.default_rng(seed).integers(0, 60, (3, size, size)).astype(np.uint8)
    for x, y in SQUARES:
        data[:, y:y + 12, x:x + 12] = 240
    return write_tif(path, data, tiled=True, blockxsize=256, blockysize=256)


def test_gdal_is_configured_from_the_standard_variables():
    config = gdal_config({"AWS_ENDPOINT_URL": "http://127.0.0.8:9000",
                          "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s",
                          "AWS_DEFAULT_REGION": "eu-west-3", "GDAL_HTTP_TIMEOUT": "5"})
    assert config["AWS_S3_ENDPOINT"] == "127.0.0.8:9000" and config["AWS_HTTPS"] == "NO"
    assert config["AWS_VIRTUAL_HOSTING"] == "FALSE" and config["AWS_REGION"] == "eu-west-3"
    assert config["AWS_ACCESS_KEY_ID"] == "k" and config["AWS_SECRET_ACCESS_KEY"] == "s"
    assert config["GDAL_DISABLE_READDIR_ON_OPEN"] == "EMPTY_DIR"
    assert "GDAL_HTTP_TIMEOUT" not in config  # the environment's own setting stays
    assert "AWS_S3_ENDPOINT" not in gdal_config({"AWS_ENDPOINT_URL": "http://a:1",
                                                 "AWS_S3_ENDPOINT": "b:2"})
    assert gdal_config({"AWS_ENDPOINT_URL_S3": "https://minio.example:9000"})[
        "AWS_HTTPS"] == "YES"
    assert [gdal_path(p) for p in ("s3://b/k.tif", "gs://b/k.tif", "https://h/k.tif",
                                   "/vsis3/b/k.tif", "k.tif")] == [
        "/vsis3/b/k.tif", "/vsigs/b/k.tif", "/vsicurl/https://h/k.tif", "/vsis3/b/k.tif",
        "k.tif"]


@pytest.mark.usefixtures("ray_local")
def test_cog_over_http_is_read_about_once(tmp_path, http_server, squares_model):
    scene = noisy_scene(tmp_path / "plain.tif")
    cog = http_server.root / "scene.tif"
    rasterio.shutil.copy(scene, cog, driver="COG", compress="deflate", blocksize=256)
    local = geodet.detect(scene, squares_model, progress=False)
    remote = geodet.detect(f"{http_server.url}/scene.tif", squares_model, progress=False)
    assert bounds(local) == bounds(remote) == EXPECTED
    size = cog.stat().st_size
    assert 0.5 * size < http_server.bytes_sent("scene.tif") <= 1.15 * size
    assert set(http_server.sent) == {"/scene.tif"}  # no probing for side-car files


@pytest.mark.parametrize("outage", [2, 10_000])
def test_a_remote_read_that_fails_is_tried_again_later(tmp_path, http_server, squares_model,
                                                       monkeypatch, outage):
    """Range requests answered 503 (GDAL's own retries off): a failed tile is read
    again at the end of its chunk, after a back-off, up to three times in all; one
    that still fails is recorded with the reason and how often it was tried."""
    import pyogrio

    scene = noisy_scene(tmp_path / "plain.tif", size=1024)
    rasterio.shutil.copy(scene, http_server.root / "scene.tif", driver="COG",
                         compress="deflate", blocksize=256)
    monkeypatch.setenv("GDAL_HTTP_MAX_RETRY", "0")
    http_server.fail_after, http_server.failures = 16384, outage  # after the header
    out = tmp_path / "o.gpkg"
    result = geodet.detect(f"{http_server.url}/scene.tif", squares_model, out,
                           engine="threads", batch_size=2, progress=False)
    tiles = pyogrio.read_dataframe(out, layer="tiles")
    assert http_server.failed >= min(outage, 2)
    if outage == 2:  # a short outage: every tile is read, nothing lost
        assert bounds(result) == EXPECTED and (tiles["status"] == "done").all()
    else:  # the server never comes back: every tile failed three times, and says so
        assert (tiles["status"] == "failed").all()
        assert tiles["error"].str.startswith("read failed 3 times: ").all()
        assert tiles["error"].str.contains("scene.tif, band 1: ").all()  # GDAL says where


def test_unreadable_http_scenes_fail_in_one_line(tmp_path, http_server, squares_model,
                                                 capsys, monkeypatch):
    out = tmp_path / "o.gpkg"
    assert "404" in run_error(capsys, ["detect", f"{http_server.url}/missing.tif",
                                       "--model", squares_model, "--out", out])
    assert not out.exists()
    monkeypatch.setenv("GDAL_HTTP_TIMEOUT", "1")
    monkeypatch.setenv("GDAL_HTTP_MAX_RETRY", "0")
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.7", 0))
        silent.listen()
        with pytest.raises(InputError, match="timed out"):
            geodet.detect(f"http://127.0.0.7:{silent.getsockname()[1]}/s.tif",
                          squares_model, progress=False)


@pytest.mark.usefixtures("ray_local")
def test_s3_patterns_and_lists(tmp_path, s3_server, squares_model):
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    for i in range(2):
        s3.upload_file(str(noisy_scene(tmp_path / f"{i}.tif")), BUCKET, f"survey/{i}.tif")
    s3.put_object(Bucket=BUCKET, Key="survey/notes.md", Body=b"not a scene")
    s3.put_object(Bucket=BUCKET, Key="survey/scenes.txt", Body=b"1.tif\n# a comment\n")
    found = geodet.detect(f"s3://{BUCKET}/survey/*.tif", squares_model, progress=False)
    assert sorted(found["scene"].unique()) == ["0.tif", "1.tif"]
    assert bounds(found[found["scene"] == "1.tif"]) == EXPECTED
    listed = geodet.detect(f"/vsis3/{BUCKET}/survey/scenes.txt", squares_model,
                           progress=False)
    assert bounds(listed) == EXPECTED and set(listed["scene"]) == {"1.tif"}
    # The two files lie on each other: as one mosaic, each square is found once.
    mosaic = geodet.detect(f"s3://{BUCKET}/survey/*.tif", squares_model, mosaic=True,
                           progress=False)
    assert bounds(mosaic) == EXPECTED
    with pytest.raises(InputError, match="does not exist"):
        geodet.detect(f"s3://{BUCKET}/survey/missing.tif", squares_model, progress=False)
    with pytest.raises(InputError, match="no file matches"):
        geodet.detect(f"s3://{BUCKET}/elsewhere/*.tif", squares_model, progress=False)


@pytest.fixture
def moto_checks_keys(monkeypatch):
    """Makes the next moto server check access keys (its IAM emulation)."""
    monkeypatch.setenv("INITIAL_NO_AUTH_ACTION_COUNT", "0")


def test_s3_refusal_is_one_line(moto_checks_keys, s3_server, squares_model):
    with pytest.raises(InputError, match="Access Key Id you provided does not exist"):
        geodet.detect(f"s3://{BUCKET}/a.tif", squares_model, progress=False)
    with pytest.raises(InputError, match=r"cannot list .*PermissionError"):
        geodet.detect(f"s3://{BUCKET}/*.tif", squares_model, progress=False)
