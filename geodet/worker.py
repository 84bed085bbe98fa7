"""The detector that runs where the pixels are: read -> preprocess -> infer -> decode.

`TileDetector` is plain Python (a Ray actor in `geodet.engine`, usable directly in
tests). It reads tiles itself, so pixels never travel to or from the driver: it
returns detections in scene pixels, already de-duplicated within each tile and
filtered to the tile's core.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from geodet.decode import DECODERS
from geodet.detections import Detections
from geodet.errors import one_line
from geodet.merge import nms
from geodet.model import ModelInfo, create_session
from geodet.preprocess import to_model_input
from geodet.raster import SceneInfo, TileReader
from geodet.tiling import TileSpec, owned

READ_ATTEMPTS = 3
READ_BACKOFF_S = 0.1


@dataclass(frozen=True)
class RunSettings:
    """Everything a worker needs; sent once to each worker."""

    model: ModelInfo
    layout: str
    scenes: tuple[SceneInfo, ...]
    tiles: tuple[tuple[int, int], ...]  # nominal tile (w, h) in source pixels, per scene
    input_size: tuple[int, int]  # (w, h) fed to the model
    batch_size: int
    conf: float
    iou: float
    own_cores: bool  # keep only detections centred in the tile's core (ownership merge)
    mean: tuple[float, ...] | None  # standardisation after scaling to 0..1
    std: tuple[float, ...] | None
    class_aware: bool
    device: str  # "cpu" or "cuda"
    threads: int


@dataclass(frozen=True)
class TileOutcome:
    scene: int
    tile_id: int
    status: str  # "done" or "failed"
    n_detections: int
    error: str = ""


@dataclass
class ChunkResult:
    detections: Detections
    tiles: list[TileOutcome]
    provider: str
    seconds: dict[str, float] = field(default_factory=dict)


class TileDetector:
    """Holds one ONNX Runtime session; turns lists of tile specs into detections."""

    def __init__(self, settings: RunSettings) -> None:
        self.s = settings
        self.session, self.provider = create_session(
            settings.model.path, settings.device, settings.threads)
        self.reader = TileReader(list(settings.scenes))
        self.decode = DECODERS[settings.layout]
        self.batch = settings.model.batch or settings.batch_size
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="geodet-read")

    def provider_name(self) -> str:
        return self.provider

    def _read(self, specs: list[TileSpec]):
        """Read a batch; a tile that cannot be read is reported, not raised."""
        t = time.perf_counter()
        arrays, scales, errors = [], [], []
        for spec in specs:
            arr, scale, error = self._read_tile(spec)
            arrays.append(arr)
            scales.append(scale)
            errors.append(error)
        return arrays, scales, errors, time.perf_counter() - t

    def _read_tile(self, spec: TileSpec):
        """Read one tile, retrying a failed read `READ_ATTEMPTS` times in all (with a
        fresh dataset handle: remote reads fail transiently); then give the reason."""
        for attempt in range(READ_ATTEMPTS):
            try:
                arr, scale = self.reader.read(spec, self.s.input_size,
                                              self.s.tiles[spec.scene])
                return arr, scale, ""
            except Exception as e:  # a corrupt block must not sink the other tiles
                error = e
                self.reader.forget(spec.scene)
                time.sleep(READ_BACKOFF_S * 2 ** attempt)
        return None, None, one_line(f"read failed {READ_ATTEMPTS} times", error)

    def _infer(self, arrays: list[np.ndarray]) -> list:
        m = self.s.model
        x = to_model_input(np.stack(arrays), m.input_dtype, m.channels_last,
                           self.s.mean, self.s.std)
        n = len(x)
        if m.batch and n < m.batch:  # fixed batch: pad it
            x = np.concatenate([x, np.zeros((m.batch - n, *x.shape[1:]), x.dtype)])
        outputs = self.session.run(None, {m.input_name: x})
        return self.decode(outputs, self.s.conf, self.s.input_size)[:n]

    def _to_scene(self, spec: TileSpec, scale, decoded) -> Detections:
        """Model-input boxes -> scene pixels, clipped to the window, NMS, core filter."""
        boxes, scores, class_ids, angles = decoded
        boxes = boxes / np.array([scale[0], scale[1], scale[0], scale[1]])
        boxes += np.array([spec.col_off, spec.row_off, spec.col_off, spec.row_off])
        x0, y0, x1, y1 = spec.bounds
        upright = angles == 0  # an oriented box cannot be clipped as a rectangle
        boxes[upright] = np.clip(boxes[upright], [x0, y0, x0, y0], [x1, y1, x1, y1])
        real = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        dets = Detections.build(boxes[real], scores[real], class_ids[real],
                                spec.scene, spec.tile_id, angles[real])
        dets = nms(dets, self.s.iou, self.s.class_aware)
        return dets.take(owned(dets.centres, spec.core)) if self.s.own_cores else dets

    def run(self, specs: list[TileSpec]) -> ChunkResult:
        batches = [specs[i:i + self.batch] for i in range(0, len(specs), self.batch)]
        seconds = {"read": 0.0, "infer": 0.0}
        parts, outcomes = [], []
        pending = self._pool.submit(self._read, batches[0]) if batches else None
        for k, batch in enumerate(batches):
            arrays, scales, errors, read_s = pending.result()
            if k + 1 < len(batches):  # read the next batch while this one infers
                pending = self._pool.submit(self._read, batches[k + 1])
            seconds["read"] += read_s
            ok = [i for i, e in enumerate(errors) if not e]
            t = time.perf_counter()
            try:
                decoded = self._infer([arrays[i] for i in ok]) if ok else []
            except Exception as e:
                msg = one_line("inference failed", e)
                errors = [err or msg for err in errors]
                ok, decoded = [], []
            seconds["infer"] += time.perf_counter() - t
            by_tile = dict(zip(ok, decoded, strict=True))
            for i, spec in enumerate(batch):
                if i in by_tile:
                    dets = self._to_scene(spec, scales[i], by_tile[i])
                    parts.append(dets)
                    outcomes.append(TileOutcome(spec.scene, spec.tile_id, "done", len(dets)))
                else:
                    outcomes.append(TileOutcome(spec.scene, spec.tile_id, "failed", 0,
                                                errors[i]))
        return ChunkResult(Detections.concat(parts), outcomes, self.provider, seconds)
