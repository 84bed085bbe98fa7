"""Feeding the model: tiles cut from blocks decoded once for all reader threads,
8-bit tiles fed as uint8 to a model that scales them itself, and a dense YOLO output
reduced by the model itself to each candidate's best class (both on a GPU)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from geodet.api import plan
from geodet.blocks import Block, Blocks
from geodet.decode import DECODERS, decode_end2end, reduced_on_device
from geodet.detector import TileDetector
from geodet.model import inspect_model
from geodet.preprocess import feeds_uint8, scaled_on_device, to_model_input
from geodet.read import TileReader
from geodet.scene import open_scene
from geodet.tiling import plan_grid
from tests.helpers import write_tif


def _scene(tmp_path, kind: str):
    """A tiled GeoTIFF of 600 x 450 px (edge blocks are partial) in 256 px blocks."""
    rng = np.random.default_rng(3)
    tiled = {"tiled": True, "blockxsize": 256, "blockysize": 256}
    if kind == "rgb jpeg":  # GDAL decodes it (YCbCr JPEG: tests/test_jpeg.py)
        data = rng.integers(0, 256, (3, 450, 600), dtype=np.uint8)
        return write_tif(tmp_path / "j.tif", data, compress="JPEG", photometric="RGB",
                         **tiled), None
    if kind == "uint16 nodata":
        data = rng.integers(1, 4096, (3, 450, 600), dtype=np.uint16)
        data[:, 100:300, 50:400] = 0
        return write_tif(tmp_path / "n.tif", data, nodata=0, compress="DEFLATE",
                         **tiled), None
    if kind == "alpha":
        data = rng.integers(0, 256, (4, 450, 600), dtype=np.uint8)
        data[3] = np.where(rng.random((450, 600)) < 0.3, 0, 255)
        return write_tif(tmp_path / "a.tif", data, photometric="RGB", alpha="YES",
                         **tiled), None
    if kind == "bands 3,1":
        data = rng.integers(0, 256, (3, 450, 600), dtype=np.uint8)
        return write_tif(tmp_path / "b.tif", data, **tiled), (3, 1)
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["rgb jpeg", "uint16 nodata", "alpha", "bands 3,1"])
def test_tiles_cut_from_shared_blocks_are_direct_reads_bit_for_bit(tmp_path, kind):
    """Every tile of a grid with overlap (edge tiles and partial blocks included),
    read by two threads sharing one `Blocks`, equals a direct windowed read: pixels,
    type, validity and fill. Resampled tiles, which are read directly, too."""
    path, bands = _scene(tmp_path, kind)
    scene = open_scene(path, bands)
    for tile, size in (((200, 200), (200, 200)), ((200, 200), (160, 160))):
        grid = plan_grid(scene.width, scene.height, tile, 0.25, scene=0,
                         extent=(0, 0, scene.width, scene.height))
        specs = list(grid)
        blocks, local = Blocks(), threading.local()

        def cut(spec, blocks=blocks, local=local, size=size, tile=tile):
            if not hasattr(local, "reader"):
                local.reader = TileReader([scene], blocks)
            return local.reader.read(spec, size, tile)

        with ThreadPoolExecutor(2) as pool:
            shared = list(pool.map(cut, specs))
        direct = TileReader([scene])
        assert len(specs) > 9
        for spec, got in zip(specs, shared, strict=True):
            want = direct.read(spec, size, tile)
            assert got.pixels.dtype == want.pixels.dtype
            assert np.array_equal(got.pixels, want.pixels), spec
            assert (got.valid is None) == (want.valid is None)
            assert got.valid is None or np.array_equal(got.valid, want.valid)
            assert got.scale == want.scale
        held = len(blocks._done)  # resampled tiles of these are read directly
        assert held == (0 if size != tile else 3 * 2)  # 600 x 450 px: 3 x 2 blocks


def test_small_blocks_and_untiled_rasters_are_read_directly(tmp_path):
    data = np.random.default_rng(1).integers(0, 256, (3, 300, 300), dtype=np.uint8)
    for name, extra in (("strips.tif", {}),
                        ("small.tif", {"tiled": True, "blockxsize": 128, "blockysize": 128})):
        scene = open_scene(write_tif(tmp_path / name, data, **extra))
        blocks = Blocks()
        spec = plan_grid(300, 300, (100, 100), 0.0, scene=0, extent=(0, 0, 300, 300))[4]
        tile = TileReader([scene], blocks).read(spec, (100, 100), (100, 100))
        assert np.array_equal(tile.pixels, data[:, 100:200, 100:200])
        assert not blocks._done


def test_each_block_is_decoded_once_for_all_threads():
    """Four threads ask for overlapping sets of blocks at the same moment: each block
    is decoded once, and every thread gets every block it asked for."""
    decoded: list = []
    lock, start = threading.Lock(), threading.Barrier(4)

    def decode(key):
        with lock:
            decoded.append(key)
        return Block(np.full((1, 4, 4), key, np.uint8), None)

    blocks = Blocks()

    def ask(first: int) -> dict:
        start.wait()
        return blocks.get(range(first, first + 8), decode)

    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(ask, [0, 2, 4, 6]))
    assert sorted(decoded) == list(range(14))
    for first, found in zip([0, 2, 4, 6], got, strict=True):
        assert sorted(found) == list(range(first, first + 8))
        assert all((b.pixels == k).all() for k, b in found.items())


def test_a_block_that_fails_raises_in_every_reader_and_is_read_again_later():
    calls, release = [], threading.Event()

    def failing(key):
        calls.append(key)
        release.wait(5)
        raise OSError(f"block {key} is corrupt")

    blocks = Blocks()
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(blocks.get, [7], failing)
        while not calls:  # the first reader is decoding block 7
            threading.Event().wait(0.01)
        second = pool.submit(blocks.get, [7], failing)
        release.set()
        for future in (first, second):
            with pytest.raises(OSError, match="block 7 is corrupt"):
                future.result()
    assert calls == [7]  # the second reader waited for the first one's decode
    fine = blocks.get([7], lambda key: Block(np.zeros((1, 2, 2)), None))
    assert list(fine) == [7]


def test_the_budget_drops_the_least_recently_used_blocks():
    size = np.zeros((1, 16, 16), np.uint8).nbytes
    blocks = Blocks(budget=3 * size)

    def decode(key):
        return Block(np.zeros((1, 16, 16), np.uint8), None)

    blocks.get([1, 2, 3], decode)
    blocks.get([1], decode)  # 1 is now the most recently used
    blocks.get([4], decode)
    assert list(blocks._done) == [3, 1, 4]
    blocks.need(2 * size)  # what the readers need, when it is less than the budget
    blocks.get([5], decode)
    assert list(blocks._done) == [4, 5]
    blocks.need(9 * size)  # the most any reader needs; never more than the budget
    blocks.get([6, 7, 8], decode)
    assert list(blocks._done) == [6, 7, 8]


def _identity_model(dtype: int, channels_last: bool = False, dims: list | None = None,
                    opset: int = 17) -> bytes:
    """A model whose output is its input: what it computes is what it was fed."""
    dims = dims or (["b", 8, 8, 3] if channels_last else ["b", 3, 8, 8])
    graph = helper.make_graph(
        [helper.make_node("Identity", ["images"], ["output0"])], "identity",
        [helper.make_tensor_value_info("images", dtype, dims)],
        [helper.make_tensor_value_info("output0", dtype, dims)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model.SerializeToString()


@pytest.mark.parametrize("dtype", [TensorProto.FLOAT, TensorProto.FLOAT16])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("mean_std", [None, ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
def test_a_model_scaling_its_uint8_input_computes_what_the_host_does(
        tmp_path, dtype, channels_last, mean_std):
    """The wrapped model, fed uint8 tiles, sees bit for bit the tensor the host would
    have made (scaled, standardised, in the model's float type and layout)."""
    raw = _identity_model(dtype, channels_last)
    (tmp_path / "m.onnx").write_bytes(raw)
    info = inspect_model(tmp_path / "m.onnx", raw)
    mean, std = mean_std or (None, None)
    tiles = list(np.random.default_rng(2).integers(0, 256, (5, 3, 8, 8), dtype=np.uint8))
    ranges = [((0.0, 255.0),) * 3] * 5
    host = to_model_input(tiles, ranges, info.input_dtype, channels_last, mean, std)
    wrapped = scaled_on_device(raw, info, mean, std)
    onnx.checker.check_model(onnx.load_from_string(wrapped))
    session = ort.InferenceSession(wrapped, providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].type == "tensor(uint8)"
    fed = to_model_input(tiles, ranges, "uint8", channels_last)
    assert fed.dtype == np.uint8
    [device] = session.run(None, {"images": fed})
    assert device.dtype == host.dtype and np.array_equal(device, host)


@pytest.mark.parametrize("layout", ["ultralytics", "yolov5"])
@pytest.mark.parametrize("dtype", [TensorProto.FLOAT, TensorProto.FLOAT16])
@pytest.mark.parametrize("opset", [9, 17, 18])  # Slice's bounds and ReduceMax's axes
def test_a_model_reducing_its_output_decodes_what_the_host_does(layout, dtype, opset):
    """A model whose output is its input, fed YOLO outputs (4 boxes of 40 classes with
    ties, 300 candidates), reduced on the device: the `end2end` decoder finds exactly
    what the layout's own decoder finds in the full output, at several thresholds."""
    rng = np.random.default_rng(5)
    candidates, values = 300, 4 + (layout == "yolov5") + 40
    raw = rng.random((3, candidates, values)) * [640, 640, 80, 80, *[1] * (values - 4)]
    raw[:, :, -40:] = np.round(raw[:, :, -40:] * 8) / 8  # ties: the first class wins
    if layout == "ultralytics":
        raw = raw.transpose(0, 2, 1)
    raw = raw.astype(helper.tensor_dtype_to_np_dtype(dtype))
    model = _identity_model(dtype, dims=["b", *raw.shape[1:]], opset=opset)
    reduced = reduced_on_device(model, layout)
    onnx.checker.check_model(onnx.load_from_string(reduced))
    session = ort.InferenceSession(reduced, providers=["CPUExecutionProvider"])
    [out] = session.get_outputs()
    assert (out.name, out.type) == ("geodet_detections", "tensor(float)")
    device = session.run(None, {"images": raw})
    assert device[0].shape == (3, candidates, 6)
    for conf in (0.0, 0.3, 0.9):
        host = DECODERS[layout]([raw], conf, (640, 640))
        ours = decode_end2end(device, conf, (640, 640))
        assert sum(len(h[1]) for h in host) > (0 if conf < 0.9 else -1)
        for h, o in zip(host, ours, strict=True):
            for a, b in zip(h, o, strict=True):
                assert a.dtype == b.dtype and np.array_equal(a, b)


def test_only_8bit_scenes_taken_as_0_to_255_are_fed_uint8(tmp_path, squares_model):
    data = np.full((3, 64, 64), 40, np.uint8)
    eight = open_scene(write_tif(tmp_path / "e.tif", data))
    sixteen = open_scene(write_tif(tmp_path / "s.tif", data.astype(np.uint16) * 16))
    stretched = open_scene(tmp_path / "e.tif", scale=(0.0, 200.0))
    info = inspect_model(squares_model)
    assert feeds_uint8([eight], info)
    assert not feeds_uint8([eight, sixteen], info)
    assert not feeds_uint8([stretched], info)
    from dataclasses import replace
    assert not feeds_uint8([eight], replace(info, input_dtype="uint8"))  # already is


def test_a_gpu_detector_finds_what_a_cpu_one_finds(tmp_path, squares_model):
    """``cuda`` on a machine without one: ONNX Runtime runs the uint8-fed model with
    its reduced output on the CPU, and the detections are those of the float-fed CPU
    detector decoding the full output, exactly."""
    from tests.helpers import scene_with_squares
    path = write_tif(tmp_path / "s.tif", scene_with_squares((300, 300), [(20, 30), (150, 160),
                                                                         (250, 10)]))
    job = plan(path, squares_model, tile_size=128, overlap=0.2)
    specs = list(job.todo([np.zeros(len(g), bool) for g in job.grids]))
    found = {}
    for device in ("cpu", "cuda"):
        detector = TileDetector(job.model, job.settings, job.options, device, 1, readers=2)
        found[device] = detector.run(specs)
        fed = detector.session.get_inputs()[0].type
        assert fed == ("tensor(uint8)" if device == "cuda" else "tensor(float)")
        [out] = detector.session.get_outputs()
        if device == "cuda":  # [B, N, 6]
            assert out.name == "geodet_detections" and out.shape[2] == 6
        else:  # [B, 4 + nc, N]
            assert out.shape[1] == 4 + len(job.settings.model.names)
    cpu, gpu = found["cpu"].detections, found["cuda"].detections
    assert len(cpu) == 3
    assert np.array_equal(cpu.boxes, gpu.boxes) and np.array_equal(cpu.scores, gpu.scores)
    assert np.array_equal(cpu.class_ids, gpu.class_ids)
    assert found["cpu"].tiles == found["cuda"].tiles


def test_the_run_record_says_what_the_gpu_did_besides_the_model(tmp_path, squares_model):
    from datetime import UTC, datetime

    from geodet.detections import Detections
    from geodet.engine import Execution
    from geodet.model import CPU, CUDA
    from geodet.provenance import run_record

    data = np.full((3, 64, 64), 40, np.uint8)
    eight = write_tif(tmp_path / "e.tif", data)
    sixteen = write_tif(tmp_path / "s.tif", data.astype(np.uint16) * 16)
    fed = "input fed as uint8, scaled on the device"
    reduced = "output reduced to each candidate's best class on the device"
    for path, providers, layout, notes in (
            (eight, (CUDA,), None, [fed, reduced]), (eight, (CPU,), None, []),
            (sixteen, (CUDA,), None, [reduced]), (eight, (CUDA,), "detr", [fed])):
        execution = Execution({}, Detections.empty(), {}, providers, 1, "ray")
        record = run_record(plan(path, squares_model, layout=layout), execution, 0, 0,
                            datetime.now(UTC), 0.0)
        assert record["provider_options"].split("; ")[1:] == notes
