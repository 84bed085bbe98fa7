"""Check that ONNX Runtime here can run geodet's detectors on an NVIDIA GPU.

    python cluster/check_cuda_provider.py            # no GPU needed: at `docker build`
    python cluster/check_cuda_provider.py --session  # on a GPU machine
    python cluster/check_cuda_provider.py --trt      # also TensorRT (--trt), either way

Without a GPU: onnxruntime must be the onnxruntime-gpu build (and the CPU package must
not be installed beside it), list CUDAExecutionProvider, and every library its CUDA
provider needs must load: those it links (cuBLAS, cuRAND, the CUDA runtime) and those it
opens at run time (cuDNN 9, cuFFT). Only libcuda.so.1 may be missing: it belongs to the
NVIDIA driver, which the NVIDIA Container Toolkit brings in from the host. With
``--session``: a session on the bundled detector must run on CUDA (ONNX Runtime falls
back to the CPU with only a warning otherwise). With ``--trt``: the TensorRT provider
must be listed and every library it links (TensorRT 10's libnvinfer and
libnvonnxparser) must be found; with ``--session`` too, a session asked for TensorRT
must run on it. Prints one line per problem, exits 1.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib.metadata
import importlib.resources
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
DRIVER = "libcuda.so.1"
INPUT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16,
               "tensor(uint8)": np.uint8}


def library_problems() -> list[str]:
    """What keeps the installed ONNX Runtime from running on CUDA, without a GPU."""
    installed = {d.metadata["Name"].lower() for d in importlib.metadata.distributions()}
    problems = []
    if "onnxruntime" in installed:
        problems.append("the CPU package onnxruntime is installed and shadows "
                        "onnxruntime-gpu: uninstall both, then install geodet[gpu] only")
    if CUDA not in ort.get_available_providers():
        problems.append(f"onnxruntime lists no {CUDA} (providers: "
                        f"{', '.join(ort.get_available_providers())}): install geodet[gpu] "
                        "(CUDA 13) or geodet[gpu-cuda12]")
        return problems
    provider = Path(ort.__file__).parent / "capi" / "libonnxruntime_providers_cuda.so"
    linked = subprocess.run(["ldd", str(provider)], capture_output=True, text=True,
                            check=True).stdout
    problems += [f"{line.split()[0]}, linked by the CUDA provider, is not found"
                 for line in linked.splitlines()
                 if "not found" in line and DRIVER not in line]
    cuda = re.search(r"libcudart\.so\.(\d+)", linked)
    cufft = "12" if cuda and int(cuda.group(1)) >= 13 else "11"
    for library in ("libcudnn.so.9", f"libcufft.so.{cufft}"):
        try:
            ctypes.CDLL(library)
        except OSError as e:
            problems.append(f"{library}, opened by the CUDA provider at run time, does not "
                            f"load: {e}")
    return problems


def tensorrt_problems() -> list[str]:
    """What keeps the installed ONNX Runtime from running TensorRT, without a GPU."""
    if TENSORRT not in ort.get_available_providers():
        return [f"onnxruntime lists no {TENSORRT}: install geodet[gpu] (onnxruntime-gpu)"]
    provider = Path(ort.__file__).parent / "capi" / "libonnxruntime_providers_tensorrt.so"
    linked = subprocess.run(["ldd", str(provider)], capture_output=True, text=True,
                            check=True).stdout
    return [f"{line.split()[0]}, linked by the TensorRT provider, is not found: install "
            "TensorRT 10 for this CUDA (tensorrt-cu13-libs or tensorrt-cu12-libs, <11) and "
            "put its tensorrt_libs folder on the library path (ldconfig)"
            for line in linked.splitlines() if "not found" in line and DRIVER not in line]


def session_problems(provider: str = CUDA) -> list[str]:
    """Run the bundled detector once on ``provider``; what went wrong, if anything."""
    model = importlib.resources.files("geodet") / "data" / "vehicles.onnx"
    session = ort.InferenceSession(str(model), providers=[provider, CUDA])
    if session.get_providers()[0] != provider:
        return [f"a session asked for {provider} runs on {session.get_providers()[0]}: is "
                "an NVIDIA GPU visible (docker run --gpus all) with a recent enough driver?"]
    first = session.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in first.shape]
    session.run(None, {first.name: np.zeros(shape, INPUT_TYPES[first.type])})
    return []


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--session", action="store_true",
                        help="also run a session on the GPU (needs one)")
    parser.add_argument("--trt", action="store_true",
                        help="also check the TensorRT provider (geodet detect --trt)")
    args = parser.parse_args()
    problems = library_problems()
    if not problems and args.trt:
        problems = tensorrt_problems()
    if not problems and args.session:
        problems = session_problems(TENSORRT if args.trt else CUDA)
    for problem in problems:
        print(f"check_cuda_provider: {problem}", file=sys.stderr)
    if not problems:
        print(f"check_cuda_provider: onnxruntime {ort.__version__} can run on "
              + ("TensorRT and CUDA" if args.trt else "CUDA")
              + (" (a session ran on the GPU)" if args.session else ""))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
