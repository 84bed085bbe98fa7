"""Inference where the pixels are: read -> preprocess -> infer -> decode -> scene pixels.

`TileDetector` is plain Python (a Ray actor in `geodet.engine`, usable directly in
tests). It reads tiles itself, so pixels never travel to or from the driver: it
returns detections in scene pixels, already de-duplicated within each tile and, for
the ownership merge, filtered to the tile's core. Boxes that lie mostly on invalid
pixels (nodata, alpha, mask, padding) are dropped (``--min-valid``).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from geodet.decode import DECODERS
from geodet.detections import ChunkResult, Detections, TileOutcome, TileStatus
from geodet.errors import one_line
from geodet.georef import tile_to_scene
from geodet.merge import nms
from geodet.model import create_session
from geodet.options import Options
from geodet.preprocess import to_model_input
from geodet.read import Tile, TileReader
from geodet.settings import Settings
from geodet.tiling import TileSpec, owned


class TileDetector:
    """Holds one ONNX Runtime session; turns lists of tile specs into detections.

    Tiles are read by ``readers`` threads, each with its own open datasets, ahead of
    inference (``readers + 1`` batches ahead), so that decoding and preprocessing on
    several cores keep the model busy; inference runs on the calling thread.
    """

    def __init__(self, model: bytes, settings: Settings, options: Options, device: str,
                 threads: int, readers: int = 1) -> None:
        """``model``: the ONNX file's bytes (a Ray actor receives them from the object
        store, so the file need not exist on its node)."""
        self.s, self.options = settings, options
        self.session, self.provider = create_session(model, device, threads, options.trt,
                                                     settings)
        self.decode = DECODERS[settings.layout]
        self.ahead = readers + 1
        m, (width, height) = settings.model, settings.input_size
        self._buffer = np.empty((max(settings.batch_size, m.batch or 0), m.channels, height,
                                 width), np.float32)  # the model input, reused
        self._local = threading.local()  # a TileReader per reader thread
        self._pool = ThreadPoolExecutor(max_workers=readers, thread_name_prefix="geodet-read")

    def provider_name(self) -> str:
        return self.provider

    def _read(self, spec: TileSpec) -> tuple[Tile | None, str, float]:
        """Read one tile on a reader thread; a tile that cannot be read is reported,
        not raised."""
        t = time.perf_counter()
        if not hasattr(self._local, "reader"):
            self._local.reader = TileReader(list(self.s.scenes))
        tile, error = self._local.reader.try_read(spec, self.s.input_size,
                                                  self.s.tiles[spec.scene])
        return tile, error, time.perf_counter() - t

    def _infer(self, specs: list[TileSpec], tiles: list[Tile]) -> list:
        m = self.s.model
        x = to_model_input([t.pixels for t in tiles],
                           [self.s.scenes[spec.scene].value_range for spec in specs],
                           m.input_dtype, m.channels_last, self.s.mean, self.s.std,
                           m.batch, self._buffer)
        outputs = self.session.run(None, {m.input_name: x})
        return self.decode(outputs, self.s.conf, self.s.input_size)[:len(tiles)]

    def _keep(self, spec: TileSpec, tile: Tile, decoded) -> Detections:
        """One tile's model boxes -> scene pixels, NMS within the tile, core filter."""
        boxes, scores, class_ids, angles = decoded
        on_data = tile.valid_fraction(boxes) >= self.options.min_valid
        boxes = tile_to_scene(boxes, angles, tile.scale, spec)
        real = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1]) & on_data
        dets = Detections.build(boxes[real], scores[real], class_ids[real],
                                spec.scene, spec.tile_id, angles[real])
        dets = nms(dets, self.s.iou, not self.options.class_agnostic)
        if self.options.merge == "ownership":
            return dets.take(owned(dets.centres, spec.core))
        return dets

    def _batch(self, batch: list[TileSpec], reads: list) -> tuple[list, list, float]:
        """Infer one read batch: its tiles' detections and outcomes, and the seconds
        spent inferring."""
        ok = [i for i, (_, error, _) in enumerate(reads) if not error]
        errors = [error for _, error, _ in reads]
        t = time.perf_counter()
        try:
            decoded = self._infer([batch[i] for i in ok], [reads[i][0] for i in ok]) \
                if ok else []
        except Exception as e:  # ORT raises several unrelated types
            msg = one_line("inference failed", e)
            errors = [err or msg for err in errors]
            ok, decoded = [], []
        infer_s = time.perf_counter() - t
        by_tile = dict(zip(ok, decoded, strict=True))
        parts, outcomes = [], []
        for i, spec in enumerate(batch):
            if i in by_tile:
                dets = self._keep(spec, reads[i][0], by_tile[i])
                parts.append(dets)
                outcomes.append(TileOutcome(spec.scene, spec.tile_id, TileStatus.DONE,
                                            len(dets)))
            else:
                outcomes.append(TileOutcome(spec.scene, spec.tile_id, TileStatus.FAILED, 0,
                                            errors[i]))
        return parts, outcomes, infer_s

    def stream(self, chunks: Iterable[list[TileSpec]]) -> Iterator[ChunkResult]:
        """One `ChunkResult` per chunk of ``chunks``, in order. Reads run ahead across
        chunk boundaries, so the model never waits for the first batch of a chunk."""
        size = self.s.batch_size
        batches = ((k, c[i:i + size], i + size >= len(c))
                   for k, c in enumerate(chunks) for i in range(0, max(len(c), 1), size))
        ahead: deque = deque()

        def submit() -> None:
            if (item := next(batches, None)) is not None:
                ahead.append((*item, [self._pool.submit(self._read, s) for s in item[1]]))

        for _ in range(self.ahead):
            submit()
        parts, outcomes, seconds = [], [], {"read": 0.0, "infer": 0.0}
        while ahead:
            _, batch, last, futures = ahead.popleft()
            submit()
            reads = [f.result() for f in futures]
            seconds["read"] += sum(r[2] for r in reads)
            found, done, seconds_infer = self._batch(batch, reads)
            parts += found
            outcomes += done
            seconds["infer"] += seconds_infer
            if last:
                yield ChunkResult(Detections.concat(parts), tuple(outcomes), self.provider,
                                  seconds)
                parts, outcomes, seconds = [], [], {"read": 0.0, "infer": 0.0}

    def run(self, specs: list[TileSpec]) -> ChunkResult:
        """Detect in one chunk of ``specs``."""
        return next(self.stream([specs]))
