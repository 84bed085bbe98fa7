"""Value scaling, decided once per scene: --scale, the declared bit depth (NBITS), the
inferred one, float data as is; recorded in geodet_runs; 12-bit data detected as well
as the same scene in 8 bits."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import rasterio

import geodet
from geodet.demo import bundled_model
from geodet.errors import InputError
from geodet.evaluate import evaluate
from geodet.options import Options
from geodet.scene import open_scene
from geodet.synthetic import CLASSES, vehicle_scene, write_truth
from tests.helpers import run_error, write_tif


def ranges(scene) -> list[tuple[float, float]] | None:
    return None if scene.value_range is None else [tuple(r) for r in scene.value_range]


def test_the_rules_in_order(tmp_path, caplog):
    data = np.full((3, 40, 40), 3000, np.uint16)
    declared = write_tif(tmp_path / "nbits.tif", data, nbits=12)
    plain = write_tif(tmp_path / "plain.tif", data)
    floats = write_tif(tmp_path / "float.tif", data.astype(np.float32) / 4095)
    eight = write_tif(tmp_path / "eight.tif", np.zeros((3, 40, 40), np.uint8))

    s = open_scene(declared)
    assert ranges(s) == [(0, 4095)] * 3 and s.range_source == "NBITS=12 in the scene"
    assert ranges(open_scene(declared, scale=(100, 3000))) == [(100, 3000)] * 3
    assert ranges(open_scene(declared, bands=(3, 1), scale=(0, 10, 5, 20))) == [(0, 10),
                                                                                (5, 20)]
    assert ranges(open_scene(eight)) == [(0, 255)] * 3
    assert ranges(open_scene(floats)) is None
    assert ranges(open_scene(floats, scale=(0, 2))) == [(0, 2)] * 3
    with caplog.at_level(logging.WARNING, logger="geodet"):
        s = open_scene(plain)
    assert ranges(s) == [(0, 4095)] * 3 and "largest value 3000" in s.range_source
    assert "without a declared bit depth" in caplog.text and "--scale" in caplog.text


def test_bad_scale_is_one_line(tmp_path, squares_model, capsys):
    path = write_tif(tmp_path / "s.tif", np.zeros((3, 8, 8), np.uint16))
    assert "invalid scale" in run_error(capsys, ["detect", path, "--model", squares_model,
                                                 "--out", tmp_path / "o.gpkg",
                                                 "--scale", "4095,0"])
    with pytest.raises(InputError, match="gives 2 MIN,MAX pairs for the 3 bands"):
        open_scene(path, scale=(0, 1, 0, 1))
    for bad in ("5,5", "0,1,2", "0,nan", "x,1"):
        with pytest.raises(InputError, match="invalid scale"):
            Options.parse(scale=bad)
    assert Options.parse(scale="0,4095").scale == (0, 4095)


@pytest.fixture(scope="module")
def twelve_bit(tmp_path_factory):
    """One aerial scene as 8-bit RGB, and as 12-bit in uint16 with a fourth band
    (near infrared), with and without NBITS=12."""
    work = tmp_path_factory.mktemp("twelve")
    boxes, classes = vehicle_scene(work / "8bit.tif", size=1280, seed=31)
    truth = write_truth(work / "truth.gpkg", boxes, work / "8bit.tif",
                        np.array(CLASSES)[classes])
    with rasterio.open(work / "8bit.tif") as ds:
        rgb, profile = ds.read(), ds.profile
    nir = np.random.default_rng(0).integers(2000, 4096, (1, *rgb.shape[1:]))
    data = np.concatenate([np.round(rgb.astype(np.float64) * 4095 / 255), nir])
    data = data.astype(np.uint16)
    for name, extra in (("nbits", {"nbits": 12}), ("plain", {})):
        write_tif(work / f"{name}.tif", data, transform=profile["transform"],
                  crs=profile["crs"], tiled=True, compress="deflate", **extra)
    return work, truth


@pytest.mark.usefixtures("ray_local")
def test_twelve_bit_scene_is_detected_like_its_8_bit_self(twelve_bit):
    work, truth = twelve_bit
    model = bundled_model()
    f1 = {}
    for name, scene, options in (("8bit", "8bit.tif", {}),
                                 ("nbits", "nbits.tif", {"bands": "1,2,3"}),
                                 ("scale", "plain.tif", {"bands": "1,2,3",
                                                         "scale": "0,4095"})):
        result = geodet.detect(work / scene, model, progress=False, **options)
        f1[name] = evaluate(result, truth)["all"]["f1"]
        if name != "8bit":
            recorded = json.loads(result.attrs["geodet"]["settings"])["scale"]
            assert recorded["value"] == [[[0, 4095]] * 3]
            assert recorded["source"] == [{"nbits": "NBITS=12 in the scene",
                                           "scale": "command line (--scale)"}[name]]
    assert f1["8bit"] > 0.9
    assert abs(f1["nbits"] - f1["8bit"]) <= 0.01 and abs(f1["scale"] - f1["8bit"]) <= 0.01
