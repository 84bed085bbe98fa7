"""GPU settings: which ONNX Runtime providers a detector asks for, with which options,
what runs on a CPU-only machine when TensorRT is asked for, and what is recorded."""

from __future__ import annotations

import dataclasses
import json
import logging
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pyogrio
import pytest

import geodet
from geodet.cli import main
from geodet.model import (
    CPU,
    CUDA,
    CUDA_OPTIONS,
    TENSORRT,
    create_session,
    describe_providers,
    execution_providers,
    fallback_warning,
    inspect_model,
    trt_cache_dir,
    trt_options,
)
from geodet.report import summarise
from tests.helpers import run_error, scene_with_squares, write_tif
from tools.toy_models import bright_squares

GPU_BUILD = (TENSORRT, CUDA, CPU)  # what onnxruntime-gpu lists
CUDA_ONLY = (CUDA, CPU)  # a CUDA build without the TensorRT provider
CPU_BUILD = ("AzureExecutionProvider", CPU)  # what the onnxruntime package lists


def toy(batch: int | str = "batch", size: int = 128) -> bytes:
    return bright_squares(size=size, batch=batch).SerializeToString()


def run_settings(data: bytes, batch_size: int = 8, input_size=(128, 128), **model):
    """What `trt_options` reads of a run's `Settings`: the model, input size, batch."""
    info = dataclasses.replace(inspect_model("toy.onnx", data), **model)
    return SimpleNamespace(model=info, input_size=input_size,
                           batch_size=info.batch or batch_size)


def names(providers: list[tuple[str, dict]]) -> list[str]:
    return [name for name, _ in providers]


# --- the provider list, per case --------------------------------------------------------

@pytest.mark.parametrize("device,trt,available,expected", [
    ("cpu", False, GPU_BUILD, [CPU]),  # Ray shows GPUs to CPU workers: ask for the CPU
    ("cpu", True, GPU_BUILD, [CPU]),  # --trt on a cluster without GPUs
    ("cuda", False, GPU_BUILD, [CUDA, CPU]),
    ("cuda", True, GPU_BUILD, [TENSORRT, CUDA, CPU]),
    ("cuda", True, CUDA_ONLY, [CUDA, CPU]),
    ("cuda", False, CPU_BUILD, [CPU]),  # the CPU package on a GPU node
    ("cuda", True, CPU_BUILD, [CPU]),
])
def test_provider_list_per_case(device, trt, available, expected):
    providers = execution_providers(device, trt, available, run_settings(toy()))
    assert names(providers) == expected
    options = dict(providers)
    if CUDA in options:
        assert options[CUDA] == {"device_id": 0, "cudnn_conv_algo_search": "EXHAUSTIVE",
                                 "do_copy_in_default_stream": True}
    assert options[CPU] == {}


def test_tensorrt_options_fp16_caches_and_a_profile_for_every_batch(monkeypatch, tmp_path):
    monkeypatch.setenv("GEODET_TRT_CACHE", str(tmp_path / "trt"))
    settings = run_settings(toy(), batch_size=8)
    [(name, options), *_] = execution_providers("cuda", True, GPU_BUILD, settings)
    cache = str(tmp_path / "trt" / settings.model.sha256[:16])
    assert name == TENSORRT and options == {
        "device_id": 0, "trt_fp16_enable": True, "trt_engine_cache_enable": True,
        "trt_engine_cache_path": cache, "trt_timing_cache_enable": True,
        "trt_timing_cache_path": cache,
        "trt_profile_min_shapes": "images:1x3x128x128",
        "trt_profile_opt_shapes": "images:8x3x128x128",
        "trt_profile_max_shapes": "images:8x3x128x128"}


def test_tensorrt_profile_follows_the_input_layout_and_size():
    nhwc = run_settings(toy(), batch_size=4, input_size=(320, 256), height=None, width=None,
                        channels_last=True)
    assert trt_options(nhwc)["trt_profile_max_shapes"] == "images:4x256x320x3"
    static = run_settings(toy(batch=2))  # a fixed batch and size: nothing to declare
    assert not any(k.startswith("trt_profile") for k in trt_options(static))
    odd = run_settings(toy(), input_name="x:0")  # the profile syntax cannot name it
    assert not any(k.startswith("trt_profile") for k in trt_options(odd))


def test_engine_cache_folder_per_model(monkeypatch, tmp_path):
    monkeypatch.delenv("GEODET_TRT_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert trt_cache_dir("ab" * 32) == str(tmp_path / "xdg" / "geodet" / "trt" / ("ab" * 8))
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert trt_cache_dir("cd" * 32).startswith(str(tmp_path / "home" / ".cache" / "geodet"))
    monkeypatch.setenv("GEODET_TRT_CACHE", "/shared/trt")
    assert trt_cache_dir("ef" * 32) == "/shared/trt/" + "ef" * 8


# --- what is said, and what is recorded -------------------------------------------------

def test_fallback_warning_per_case():
    assert fallback_warning("cpu", False, [CPU, CPU]) is None
    assert fallback_warning("cuda", False, [CUDA, CUDA]) is None
    assert fallback_warning("cuda", True, [TENSORRT, TENSORRT]) is None
    no_gpu = fallback_warning("cpu", True, [CPU, CPU])
    assert no_gpu.startswith("--trt asked for TensorRT, but there is no GPU to run on: "
                             "the detectors run on CPUExecutionProvider;")
    assert "tensorrt-cu13-libs" in no_gpu
    no_trt = fallback_warning("cuda", True, [CUDA, TENSORRT])
    assert no_trt.startswith("--trt asked for TensorRT, but the detectors run on "
                             "CUDAExecutionProvider, TensorrtExecutionProvider")
    assert "install TensorRT 10" in no_trt and "tensorrt-cu13-libs>=10.13,<11" in no_trt
    no_cuda = fallback_warning("cuda", False, [CPU])
    assert no_cuda == ("GPU requested but ONNX Runtime runs on ['CPUExecutionProvider']: "
                       "check that onnxruntime-gpu and its CUDA libraries are installed")
    assert "--trt also needs TensorRT 10" in fallback_warning("cuda", True, [CPU])
    for warning in (no_gpu, no_trt, no_cuda):
        assert "\n" not in warning


def test_recorded_provider_options(monkeypatch):
    monkeypatch.setenv("GEODET_TRT_CACHE", "/cache")
    settings = run_settings(toy())
    assert describe_providers([CPU], False, settings) == (
        "CPUExecutionProvider: ONNX Runtime's defaults")
    assert describe_providers([CUDA], True, settings) == (
        "CUDAExecutionProvider: device_id=0 cudnn_conv_algo_search=EXHAUSTIVE "
        "do_copy_in_default_stream=True")
    both = describe_providers([TENSORRT], True, settings)
    trt, cuda = both.split("; ")
    assert trt.startswith("TensorrtExecutionProvider: device_id=0 trt_fp16_enable=True "
                          f"trt_engine_cache_enable=True trt_engine_cache_path=/cache/"
                          f"{settings.model.sha256[:16]} ")
    assert cuda == describe_providers([CUDA], True, settings)


def test_cuda_options_are_documented_names():
    """Only names that ONNX Runtime's CUDA provider parses (cuda_execution_provider_info)."""
    assert set(CUDA_OPTIONS) <= {"device_id", "gpu_mem_limit", "arena_extend_strategy",
                                 "cudnn_conv_algo_search", "do_copy_in_default_stream",
                                 "cudnn_conv_use_max_workspace", "enable_cuda_graph",
                                 "use_tf32", "prefer_nhwc"}


# --- real ONNX Runtime on this machine --------------------------------------------------

def test_session_asked_for_tensorrt_runs_on_what_this_onnxruntime_has():
    import onnxruntime as ort

    data = toy()
    session, provider = create_session(data, "cuda", 1, trt=True, settings=run_settings(data))
    assert provider == session.get_providers()[0]
    if TENSORRT not in ort.get_available_providers():
        assert provider == CPU
    x = np.zeros((3, 3, 128, 128), np.float32)  # a batch shorter than the profile's
    assert session.run(None, {"images": x})[0].shape[0] == 3


@pytest.fixture
def scene(tmp_path):
    return write_tif(tmp_path / "scene.tif",
                     scene_with_squares((300, 300), [(20, 30), (150, 160), (280, 100)]))


@pytest.mark.usefixtures("ray_local")
def test_trt_on_a_cpu_only_machine_warns_once_and_finds_the_same(tmp_path, scene,
                                                                 squares_model, caplog):
    """The private cluster has no GPU: the CPU runs, exit 0, the same detections, one
    warning that says what was asked, what runs and what to install; recorded."""
    plain, fast = tmp_path / "plain.gpkg", tmp_path / "trt.gpkg"
    args = ["detect", str(scene), "--model", str(squares_model), "--no-progress"]
    def said() -> list[str]:
        return [r.getMessage() for r in caplog.records
                if r.name == "geodet" and r.levelno >= logging.WARNING]

    assert main([*args, "--out", str(plain)]) == 0
    assert said() == []
    assert main([*args, "--out", str(fast), "--trt"]) == 0
    warnings = said()
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("--trt asked for TensorRT, but there is no GPU to run on: "
                                  "the detectors run on CPUExecutionProvider")
    assert "onnxruntime-gpu" in warnings[0] and "tensorrt-cu13-libs" in warnings[0]

    def detections(out):
        return pyogrio.read_dataframe(out, layer="detections")

    got, want = detections(fast), detections(plain)
    assert len(got) == 3
    assert got.drop(columns="geometry").equals(want.drop(columns="geometry"))
    assert all(g.equals_exact(w, 0) for g, w in zip(got.geometry, want.geometry, strict=True))
    [run] = pyogrio.read_dataframe(fast, layer="geodet_runs").to_dict("records")
    assert json.loads(run["configuration"])["trt"] is True
    assert json.loads(run["parameters"])["trt"] is True
    assert json.loads(run["execution_providers"]) == [CPU]
    assert run["provider_options"] == "CPUExecutionProvider: ONNX Runtime's defaults"
    [before] = pyogrio.read_dataframe(plain, layer="geodet_runs").to_dict("records")
    assert json.loads(before["parameters"])["trt"] is False
    assert summarise(fast)["runs"][0]["provider_options"] == run["provider_options"]


def test_trt_with_device_cpu_is_one_line_exit_2(tmp_path, capsys, scene, squares_model):
    out = tmp_path / "o.gpkg"
    msg = run_error(capsys, ["detect", scene, "--model", squares_model, "--out", out,
                             "--trt", "--device", "cpu"])
    assert msg == ("geodet: error: --trt runs TensorRT on GPUs, but --device cpu asks for "
                   "none: leave out --trt, or give --device auto or cuda")
    assert not out.exists()
    with pytest.raises(geodet.InputError, match="--trt runs TensorRT on GPUs"):
        geodet.detect(scene, squares_model, out, trt=True, device="cpu")


@pytest.mark.usefixtures("ray_local")
def test_outputs_written_before_provider_options_are_extended_and_reported(
        tmp_path, scene, squares_model):
    """An incremental output whose runs table has no provider_options column (an older
    geodet) takes a new run; the report shows None for the old run."""
    folder = tmp_path / "flights"
    folder.mkdir()
    write_tif(folder / "a.tif", scene_with_squares((200, 200), [(20, 30)]))
    out, pattern = tmp_path / "nightly.gpkg", str(folder / "*.tif")
    geodet.detect(pattern, squares_model, out, incremental=True, progress=False)
    runs = pyogrio.read_dataframe(out, layer="geodet_runs").drop(columns="provider_options")
    pyogrio.write_dataframe(runs, out, layer="geodet_runs", layer_options={"OVERWRITE": "YES"})
    write_tif(folder / "b.tif", scene_with_squares((200, 200), [(50, 60)]))
    geodet.detect(pattern, squares_model, out, incremental=True, progress=False)
    runs = pyogrio.read_dataframe(out, layer="geodet_runs")
    cpu = "CPUExecutionProvider: ONNX Runtime's defaults"
    assert runs["provider_options"].tolist()[-1] == cpu
    assert [r["provider_options"] for r in summarise(out)["runs"]] == [None, cpu]


def test_trt_on_a_gpu_node_without_onnxruntime_gpu_warns_once(tmp_path, ray_nodes, scene,
                                                             squares_model):
    """A node that declares a GPU, with the CPU package of ONNX Runtime: the detector
    asks for TensorRT, CUDA, CPU; the CPU runs; one warning says both what is missing."""
    ray_nodes.head(num_cpus=1)
    ray_nodes.worker("127.0.0.5", num_cpus=1, num_gpus=1)
    out = tmp_path / "o.gpkg"
    done = subprocess.run(
        [sys.executable, "-m", "geodet", "detect", str(scene), "--model", str(squares_model),
         "--out", str(out), "--address", ray_nodes.address, "--no-progress", "--trt"],
        env=ray_nodes.env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    warnings = [ln for ln in done.stderr.splitlines() if "WARNING" in ln]
    assert len(warnings) == 1, done.stderr[-3000:]
    assert "GPU requested but ONNX Runtime runs on ['CPUExecutionProvider']" in warnings[0]
    assert "--trt also needs TensorRT 10" in warnings[0]
    [record] = pyogrio.read_dataframe(out, layer="geodet_runs").to_dict("records")
    assert json.loads(record["parameters"])["device"] == "auto"
    assert json.loads(record["execution_providers"]) == [CPU]
    assert len(pyogrio.read_dataframe(out, layer="detections")) == 3
