"""Decoded blocks, shared by the reader threads of one detector.

Neighbouring tiles share most of a tiled raster's blocks: a 640 px tile at a 512 px
stride over 512 px blocks touches four, three of them its neighbours'. GDAL's block
cache belongs to one dataset handle, and each reader thread needs a handle of its own,
so readers that split neighbouring tiles would each decode the blocks they share:
two readers were no faster than one (benchmarks/gpu_feed.py). `Blocks` holds each
block once for all of them: a tile at the scene's own resolution is cut from its
blocks (`geodet.read`), each block decoded by whichever reader asks first, so N
readers decode N different blocks at a time.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from concurrent.futures import Future
from typing import NamedTuple

import numpy as np

#: The most the decoded blocks of one detector may hold: seven rows of 512 px RGB
#: blocks across a 24,000 px scene.
BUDGET_BYTES = 256 * 2**20


class Block(NamedTuple):
    """One decoded block: its pixels ``(bands, h, w)`` and, for a scene that has
    invalid pixels, which are valid ``(h, w)``."""

    pixels: np.ndarray
    valid: np.ndarray | None

    @property
    def nbytes(self) -> int:
        return self.pixels.nbytes + (0 if self.valid is None else self.valid.nbytes)


class Blocks:
    """A thread-safe cache of decoded blocks, least recently used first out when it
    holds more than it needs (`need`), or than ``budget`` bytes; each block is decoded
    once while it is held."""

    def __init__(self, budget: int = BUDGET_BYTES) -> None:
        self._budget, self._held, self._needed = budget, 0, 0
        self._lock = threading.Lock()
        self._done: OrderedDict[Hashable, Block] = OrderedDict()
        self._decoding: dict[Hashable, Future] = {}

    def need(self, nbytes: int) -> None:
        """What a reader needs held (the rows of blocks a row of tiles spans, and the
        one it shares with the next): the cache holds the most any reader needs, within
        the budget, rather than the whole budget for a narrow scene."""
        with self._lock:
            self._needed = max(self._needed, nbytes)

    def get(self, keys: Iterable[Hashable],
            decode: Callable[[Hashable], Block]) -> dict[Hashable, Block]:
        """The blocks ``keys``, decoding on this thread (``decode(key)``) those nobody
        holds or is decoding; those another thread is decoding are waited for last,
        so that two readers that share blocks decode different ones meanwhile. An
        error in ``decode`` is raised here and in every thread waiting for that block;
        the block is not kept, so a later attempt decodes it afresh."""
        found: dict[Hashable, Block] = {}
        mine: list[tuple[Hashable, Future]] = []
        theirs: list[tuple[Hashable, Future]] = []
        with self._lock:
            for key in keys:
                if key in self._done:
                    self._done.move_to_end(key)
                    found[key] = self._done[key]
                elif key in self._decoding:
                    theirs.append((key, self._decoding[key]))
                else:
                    self._decoding[key] = future = Future()
                    mine.append((key, future))
        try:
            for key, future in mine:
                found[key] = self._decode(key, future, decode)
        finally:  # an error: release the blocks claimed and not decoded
            with self._lock:
                for key, future in mine:
                    if not future.done():
                        self._decoding.pop(key, None)
                        future.set_exception(RuntimeError(f"block {key} was not read"))
        for key, future in theirs:
            found[key] = future.result()
        return found

    def _decode(self, key: Hashable, future: Future,
                decode: Callable[[Hashable], Block]) -> Block:
        try:
            block = decode(key)
        except BaseException as e:
            with self._lock:
                self._decoding.pop(key, None)
            future.set_exception(e)
            raise
        with self._lock:
            self._decoding.pop(key, None)
            self._done[key] = block
            self._held += block.nbytes
            limit = min(self._budget, self._needed or self._budget)
            while self._held > limit and len(self._done) > 1:
                self._held -= self._done.popitem(last=False)[1].nbytes
        future.set_result(block)
        return block
