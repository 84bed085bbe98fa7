"""The values that flow between stages: `Detections`, and what became of each tile.

`Detections` is a struct of arrays: boxes are ``(N, 4)`` ``x0, y0, x1, y1`` in *scene pixel*
coordinates (pixel-edge convention: ``[0, 0, 1, 1]`` is the first pixel), so that
merging happens in the raster's own grid and georeferencing happens once, at the end.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from enum import StrEnum

import numpy as np


@dataclass(frozen=True)
class Detections:
    boxes: np.ndarray  # (N, 4) float64, x0 y0 x1 y1 in scene pixels
    scores: np.ndarray  # (N,) float32
    class_ids: np.ndarray  # (N,) int32
    scene_ids: np.ndarray  # (N,) int32, index into the run's scene list
    tile_ids: np.ndarray  # (N,) int64, tile that produced the detection
    #: (N,) float64 radians: oriented boxes are ``boxes`` turned about their centre
    #: (clockwise on the image, as Ultralytics OBB); 0 for axis-aligned boxes.
    angles: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.scores)
        if self.boxes.shape != (n, 4):
            raise ValueError(f"boxes must be ({n}, 4), got {self.boxes.shape}")
        for f in fields(self)[2:]:
            if len(getattr(self, f.name)) != n:
                raise ValueError(f"{f.name} must have {n} entries")

    @classmethod
    def empty(cls) -> Detections:
        return cls.build(np.zeros((0, 4)), np.zeros(0), np.zeros(0), 0, 0)

    @classmethod
    def build(cls, boxes, scores, class_ids, scene_id, tile_id, angles=0.0) -> Detections:
        """Make detections with the canonical dtypes; ids, classes and angles may be
        scalars."""
        scores = np.asarray(scores, dtype=np.float32).reshape(-1)
        n = len(scores)

        def column(value, dtype):
            return np.broadcast_to(np.asarray(value, dtype=dtype), (n,)).copy()

        return cls(
            boxes=np.asarray(boxes, dtype=np.float64).reshape(n, 4), scores=scores,
            class_ids=column(class_ids, np.int32), scene_ids=column(scene_id, np.int32),
            tile_ids=column(tile_id, np.int64), angles=column(angles, np.float64),
        )

    @classmethod
    def concat(cls, parts: list[Detections]) -> Detections:
        """The detections of ``parts``, in order; a lone non-empty part is returned as
        it is (detections are immutable), so that a run's detections, joined with the
        none a fresh run resumes, are not held twice during the merge."""
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.empty()
        if len(parts) == 1:
            return parts[0]
        return cls(**{f.name: np.concatenate([getattr(p, f.name) for p in parts])
                      for f in fields(cls)})

    def __len__(self) -> int:
        return len(self.scores)

    def take(self, index: np.ndarray) -> Detections:
        """The detections selected by an integer index or boolean mask."""
        return Detections(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    @property
    def centres(self) -> np.ndarray:
        return (self.boxes[:, :2] + self.boxes[:, 2:]) / 2

    def sorted(self) -> Detections:
        """A canonical order (scene, then descending score, then position), so that
        the output does not depend on which worker finished first."""
        b = self.boxes
        order = np.lexsort((b[:, 3], b[:, 2], b[:, 1], b[:, 0], self.class_ids,
                            -self.scores, self.scene_ids))
        return self.take(order)


class TileStatus(StrEnum):
    """What became of a tile; the `status` column of the tiles layer."""

    DONE = "done"  # read and run through the model
    EMPTY = "empty"  # no valid pixel: not run
    FAILED = "failed"  # could not be read or run: see `TileOutcome.error`


@dataclass(frozen=True)
class TileOutcome:
    """One tile's end: its status, how many detections it kept, why it failed."""

    scene: int
    tile_id: int
    status: TileStatus
    n_detections: int = 0
    error: str = ""


@dataclass(frozen=True)
class ChunkResult:
    """What a detector returns for a chunk of tiles: never pixels."""

    detections: Detections
    tiles: tuple[TileOutcome, ...]
    provider: str  # the ONNX Runtime execution provider that ran it ("" if none)
    seconds: dict[str, float] = field(default_factory=dict)  # "read", "infer"

    @classmethod
    def failed(cls, specs, reason: str) -> ChunkResult:
        """Every tile of ``specs`` failed for ``reason``."""
        return cls(Detections.empty(), tuple(
            TileOutcome(s.scene, s.tile_id, TileStatus.FAILED, 0, reason) for s in specs), "")
