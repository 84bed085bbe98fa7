"""Inference where the pixels are: read -> preprocess -> infer -> decode -> scene pixels.

`TileDetector` is plain Python (a Ray actor in `geodet.engine`, usable directly in
tests). It reads tiles itself, so pixels never travel to or from the driver: it
returns detections in scene pixels, already de-duplicated within each tile and, for
the ownership merge, filtered to the tile's core. Boxes that lie mostly on invalid
pixels (nodata, alpha, mask, padding) are dropped (``--min-valid``).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np

from geodet.blocks import Blocks
from geodet.decode import DECODERS, REDUCIBLE, reduced_on_device
from geodet.detections import ChunkResult, Detections, TileOutcome, TileStatus
from geodet.errors import one_line
from geodet.georef import tile_to_scene
from geodet.merge import nms
from geodet.model import create_session
from geodet.options import Options
from geodet.preprocess import feeds_uint8, scaled_on_device, to_model_input
from geodet.read import READ_ATTEMPTS, READ_BACKOFF_S, REASON_CHARS, Tile, TileReader, is_remote
from geodet.settings import Settings
from geodet.tiling import TileSpec, owned


class Read(NamedTuple):
    """One attempt at reading a tile: the tile, or why it could not be read."""

    spec: TileSpec
    tile: Tile | None
    error: str
    seconds: float
    tries: int  # attempts so far, this one included


class TileDetector:
    """Holds one ONNX Runtime session; turns lists of tile specs into detections.

    Tiles are read by ``readers`` threads, each with its own open datasets, ahead of
    inference (``readers + 1`` batches ahead), so that decoding and preprocessing on
    several cores keep the model busy; inference runs on the calling thread. The
    threads cut tiles from one shared cache of decoded blocks (`geodet.blocks`), so
    that neighbouring tiles on different threads do not decode the same blocks.
    """

    def __init__(self, model: bytes, settings: Settings, options: Options, device: str,
                 threads: int, readers: int = 1) -> None:
        """``model``: the ONNX file's bytes (a Ray actor receives them from the object
        store, so the file need not exist on its node). On a GPU, a float model over
        8-bit scenes is fed the tiles' uint8 values and scales them on the device
        (`geodet.preprocess.scaled_on_device`), and a dense YOLO output is reduced to
        each candidate's best class there (`geodet.decode.reduced_on_device`)."""
        if device == "cuda" and feeds_uint8(settings.scenes, settings.model):
            model = scaled_on_device(model, settings.model, settings.mean, settings.std)
            settings = dataclasses.replace(
                settings, model=dataclasses.replace(settings.model, input_dtype="uint8"))
        if device == "cuda" and settings.layout in REDUCIBLE:
            model = reduced_on_device(model, settings.layout)
            settings = dataclasses.replace(settings, layout="end2end")
        self.s, self.options = settings, options
        self.session, self.provider = create_session(model, device, threads, options.trt,
                                                     settings)
        self.decode = DECODERS[settings.layout]
        self.ahead = readers + 1
        m, (width, height) = settings.model, settings.input_size
        self._buffer = np.empty((max(settings.batch_size, m.batch or 0), m.channels, height,
                                 width), np.uint8 if m.input_dtype == "uint8"
                                else np.float32)  # the model input, reused
        self._local = threading.local()  # a TileReader per reader thread
        self._blocks = Blocks()  # decoded once for all of them
        self._model_lock = threading.Lock()  # `run` may be called on several threads
        self._pool = ThreadPoolExecutor(max_workers=readers, thread_name_prefix="geodet-read")

    def provider_name(self) -> str:
        return self.provider

    def _read(self, spec: TileSpec, tries: int = 0, due: float = 0.0) -> Read:
        """Read one tile on a reader thread (a retry not before ``due``, monotonic);
        a tile that cannot be read is reported, not raised."""
        if due:  # a retry (a sleep of 0 would still give up the GIL for nothing)
            time.sleep(max(0.0, due - time.monotonic()))
        t = time.perf_counter()
        if not hasattr(self._local, "reader"):
            self._local.reader = TileReader(list(self.s.scenes), self._blocks)
        tile, error = self._local.reader.try_read(spec, self.s.input_size,
                                                  self.s.tiles[spec.scene])
        return Read(spec, tile, error, time.perf_counter() - t, tries + 1)

    def _infer(self, specs: list[TileSpec], tiles: list[Tile]) -> list:
        m = self.s.model
        x = to_model_input([t.pixels for t in tiles],
                           [self.s.scenes[spec.scene].value_range for spec in specs],
                           m.input_dtype, m.channels_last, self.s.mean, self.s.std,
                           m.batch, self._buffer)
        outputs = self.session.run(None, {m.input_name: x})
        return self.decode(outputs, self.s.conf, self.s.input_size)[:len(tiles)]

    def _keep(self, spec: TileSpec, tile: Tile, decoded) -> Detections:
        """One tile's model boxes -> scene pixels (clipped to the data), NMS within the
        tile, core filter."""
        boxes, scores, class_ids, angles = decoded
        if not len(scores):  # most tiles of most scenes
            return Detections.empty()
        on_data = tile.valid_fraction(boxes) >= self.options.min_valid
        boxes = tile_to_scene(tile.clip_to_valid(boxes, angles == 0), angles, tile.scale,
                              spec)
        real = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1]) & on_data
        dets = Detections.build(boxes[real], scores[real], class_ids[real],
                                spec.scene, spec.tile_id, angles[real])
        dets = nms(dets, self.s.iou, not self.options.class_agnostic)
        if self.options.merge == "ownership":
            return dets.take(owned(dets.centres, spec.core))
        return dets

    def _batch(self, reads: list[Read]) -> tuple[list, list, float]:
        """Infer one batch of reads: its tiles' detections and outcomes, and the
        seconds spent inferring."""
        ok = [r for r in reads if r.tile is not None]
        errors = {r.spec: r.error for r in reads if r.tile is None}
        t = time.perf_counter()
        try:
            decoded = self._infer([r.spec for r in ok], [r.tile for r in ok]) if ok else []
        except Exception as e:  # ORT raises several unrelated types
            errors.update((r.spec, one_line("inference failed", e)) for r in ok)
            ok, decoded = [], []
        infer_s = time.perf_counter() - t
        parts, outcomes = [], []
        for r, found in zip(ok, decoded, strict=True):
            dets = self._keep(r.spec, r.tile, found)
            parts.append(dets)
            outcomes.append(TileOutcome(r.spec.scene, r.spec.tile_id, TileStatus.DONE,
                                        len(dets)))
        outcomes += [TileOutcome(spec.scene, spec.tile_id, TileStatus.FAILED, 0, error)
                     for spec, error in errors.items()]
        return parts, outcomes, infer_s

    def _final(self, reads: list[Read], deferred: list[Read]) -> list[Read]:
        """The reads that are final: a remote tile that failed (a network hiccup, may
        be) goes to ``deferred`` until it has been tried `READ_ATTEMPTS` times; a
        local read error is final at once (a corrupt block reads the same every time).
        Final failures say how often they were tried."""
        final = []
        for r in reads:
            remote = r.tile is None and is_remote(self.s.scenes[r.spec.scene].path)
            if remote and r.tries < READ_ATTEMPTS:
                deferred.append(r)
                continue
            if r.tile is None:
                tries = f" {r.tries} times" if remote else ""
                r = r._replace(error=f"read failed{tries}: {r.error}"[:REASON_CHARS])
            final.append(r)
        return final

    def stream(self, chunks: Iterable[list[TileSpec]]) -> Iterator[ChunkResult]:
        """One `ChunkResult` per chunk of ``chunks``, in order. Reads run ahead across
        chunk boundaries, so the model never waits for the first batch of a chunk. A
        remote tile that fails is read again at the end of its chunk, after a back-off
        (`READ_BACKOFF_S`, doubling), while the other tiles go on."""
        size = self.s.batch_size
        batches = ((c[i:i + size], i + size >= len(c))
                   for c in chunks for i in range(0, max(len(c), 1), size))
        ahead: deque = deque()

        def submit() -> None:
            if (item := next(batches, None)) is not None:
                ahead.append((*item, [self._pool.submit(self._read, s) for s in item[0]]))

        for _ in range(self.ahead):
            submit()
        parts, outcomes, seconds = [], [], {"read": 0.0, "infer": 0.0}
        deferred: list[Read] = []

        def infer(reads: list[Read]) -> None:
            seconds["read"] += sum(r.seconds for r in reads)
            with self._model_lock:  # one batch at a time: the buffer and the session
                found, done, infer_s = self._batch(self._final(reads, deferred))
            parts.extend(found)
            outcomes.extend(done)
            seconds["infer"] += infer_s

        while ahead:
            _, last, futures = ahead.popleft()
            submit()
            infer([f.result() for f in futures])
            while last and deferred:
                again = [self._pool.submit(
                    self._read, r.spec, r.tries,
                    time.monotonic() + READ_BACKOFF_S * 2 ** (r.tries - 1))
                    for r in deferred]
                deferred.clear()
                for i in range(0, len(again), size):
                    infer([f.result() for f in again[i:i + size]])
            if last:
                yield ChunkResult(Detections.concat(parts), tuple(outcomes), self.provider,
                                  dict(seconds))
                parts, outcomes = [], []
                seconds.update(read=0.0, infer=0.0)

    def run(self, specs: list[TileSpec]) -> ChunkResult:
        """Detect in one chunk of ``specs``. Calls may overlap (a Ray actor runs its
        chunks in flight on as many threads): the next chunk's reads then start while
        this one's last batches are inferred, as `stream` reads across chunks."""
        return next(self.stream([specs]))
