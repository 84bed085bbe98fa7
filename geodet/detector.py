"""Inference where the pixels are: read -> preprocess -> infer -> decode -> scene pixels.

`TileDetector` is plain Python (a Ray actor in `geodet.engine`, usable directly in
tests). It reads tiles itself, so pixels never travel to or from the driver: it
returns detections in scene pixels, already de-duplicated within each tile and, for
the ownership merge, filtered to the tile's core. Boxes that lie mostly on invalid
pixels (nodata, alpha, mask, padding) are dropped (``--min-valid``).
"""

from __future__ import annotations

import time
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
    """Holds one ONNX Runtime session; turns lists of tile specs into detections."""

    def __init__(self, model: bytes, settings: Settings, options: Options, device: str,
                 threads: int) -> None:
        """``model``: the ONNX file's bytes (a Ray actor receives them from the object
        store, so the file need not exist on its node)."""
        self.s, self.options = settings, options
        self.session, self.provider = create_session(model, device, threads, options.trt,
                                                     settings)
        self.reader = TileReader(list(settings.scenes))
        self.decode = DECODERS[settings.layout]
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="geodet-read")

    def provider_name(self) -> str:
        return self.provider

    def _read(self, specs: list[TileSpec]):
        """Read a batch; a tile that cannot be read is reported, not raised."""
        t = time.perf_counter()
        read = [self.reader.try_read(spec, self.s.input_size, self.s.tiles[spec.scene])
                for spec in specs]
        return read, time.perf_counter() - t

    def _infer(self, tiles: list[Tile]) -> list:
        m = self.s.model
        x = to_model_input(np.stack([t.pixels for t in tiles]), m.input_dtype,
                           m.channels_last, self.s.mean, self.s.std)
        n = len(x)
        if m.batch and n < m.batch:  # fixed batch: pad it
            x = np.concatenate([x, np.zeros((m.batch - n, *x.shape[1:]), x.dtype)])
        outputs = self.session.run(None, {m.input_name: x})
        return self.decode(outputs, self.s.conf, self.s.input_size)[:n]

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

    def run(self, specs: list[TileSpec]) -> ChunkResult:
        """Detect in ``specs``, reading each batch while the previous one infers."""
        size = self.s.batch_size
        batches = [specs[i:i + size] for i in range(0, len(specs), size)]
        seconds = {"read": 0.0, "infer": 0.0}
        parts, outcomes = [], []
        pending = self._pool.submit(self._read, batches[0]) if batches else None
        for k, batch in enumerate(batches):
            read, read_s = pending.result()
            if k + 1 < len(batches):
                pending = self._pool.submit(self._read, batches[k + 1])
            seconds["read"] += read_s
            errors = [error for _, error in read]
            ok = [i for i, e in enumerate(errors) if not e]
            t = time.perf_counter()
            try:
                decoded = self._infer([read[i][0] for i in ok]) if ok else []
            except Exception as e:  # ORT raises several unrelated types
                msg = one_line("inference failed", e)
                errors = [err or msg for err in errors]
                ok, decoded = [], []
            seconds["infer"] += time.perf_counter() - t
            by_tile = dict(zip(ok, decoded, strict=True))
            for i, spec in enumerate(batch):
                if i in by_tile:
                    dets = self._keep(spec, read[i][0], by_tile[i])
                    parts.append(dets)
                    outcomes.append(TileOutcome(spec.scene, spec.tile_id, TileStatus.DONE,
                                                len(dets)))
                else:
                    outcomes.append(TileOutcome(spec.scene, spec.tile_id, TileStatus.FAILED,
                                                0, errors[i]))
        return ChunkResult(Detections.concat(parts), tuple(outcomes), self.provider, seconds)
