"""Per-tile progress on disk, so a killed run can be resumed.

Beside the output ``OUT.gpkg`` a SQLite file ``OUT.gpkg.progress`` records, for
every finished chunk of tiles in one transaction, each tile's outcome and the
detections it kept (in scene pixels, before the global merge). A tile is therefore
either fully recorded or not at all. The file is in WAL mode with ``synchronous =
NORMAL``: a commit appends to ``OUT.gpkg.progress-wal`` without waiting for the disk,
so the driver keeps pace with a cluster (benchmarks/dispatch.py); a chunk recorded
survives the process being killed however it is killed, and a power cut may lose the
last chunks recorded, never leave part of one (they run again on ``--resume``).
``--resume`` reloads what was done, runs the rest (failed tiles again), and merges as
an uninterrupted run would; the file is removed once the GeoPackage is complete. A
fingerprint of the run's inputs and settings (`geodet.provenance.fingerprint`) guards
against resuming a different job. A run without an output records nothing. The tiles
layer is written from this record (`outcomes`), in batches, so no run holds an object
per tile in memory.

For an output URL (``s3://bucket/cars.gpkg``) the record lives beside it in the
bucket (``s3://bucket/cars.gpkg.progress``), where a rerun on a fresh machine finds
it: it is kept in a local temporary file, uploaded after a chunk at most every
`UPLOAD_EVERY_S` seconds and when the run stops, and fetched again by ``--resume``.
A run killed outright loses at most the last `UPLOAD_EVERY_S` seconds of work.

The record belongs to the run that holds the output's lock (`geodet.lock`). An
interrupted run's local record is never dropped silently: a run without ``--resume``
that finds one refuses to start unless ``--overwrite`` says to start afresh. A
record that cannot be written (full disk...) stops the run with `OutputError`; what
was recorded stays for ``--resume``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from geodet import storage
from geodet.detections import ChunkResult, Detections, TileOutcome, TileStatus
from geodet.errors import InputError, OutputError

log = logging.getLogger("geodet")

SCHEMA = """
CREATE TABLE IF NOT EXISTS run (fingerprint TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tiles (scene INTEGER, tile_id INTEGER, status TEXT,
    n_detections INTEGER, error TEXT, PRIMARY KEY (scene, tile_id));
CREATE TABLE IF NOT EXISTS detections (scene INTEGER, tile_id INTEGER, x0 REAL, y0 REAL,
    x1 REAL, y1 REAL, score REAL, class_id INTEGER, angle REAL);
CREATE INDEX IF NOT EXISTS detections_tile ON detections (scene, tile_id);
"""
#: Set on every connection to a record file (see module doc). WAL keeps two files
#: beside the record while it is open (`SIDE_FILES`), gone once it is closed.
PRAGMAS = ("PRAGMA journal_mode = WAL", "PRAGMA synchronous = NORMAL")
SIDE_FILES = ("-wal", "-shm")


@dataclass(frozen=True, eq=False)
class Resumed:
    """What an earlier, interrupted run of the same job had done."""

    done: tuple[np.ndarray, ...]  # per scene, a bool per tile id
    detections: Detections

    @property
    def count(self) -> int:
        return sum(int(m.sum()) for m in self.done)


#: The longest time between two uploads of a remote progress record.
UPLOAD_EVERY_S = 30.0


def progress_path(out: Path | str) -> Path | str:
    """``OUT.gpkg.progress`` beside the output (a URL beside a URL)."""
    return out + ".progress" if isinstance(out, str) else out.with_name(out.name + ".progress")


def _tiles_in(path: Path) -> int | str:
    """How many tiles a progress record holds ("some" if it cannot be read). Opened
    for writing where it can be: closing it then folds a killed run's WAL into the file
    and removes the WAL files, which a read-only connection would leave behind."""
    for mode in ("rw", "ro"):
        try:
            with contextlib.closing(sqlite3.connect(f"file:{path}?mode={mode}",
                                                    uri=True)) as db:
                return db.execute("SELECT count(*) FROM tiles").fetchone()[0]
        except sqlite3.Error:
            pass
    return "some"


class ResumeRecord:
    """The progress record of one run (see module doc); a context manager that closes
    it on every path. ``out`` None: nothing is recorded."""

    def __init__(self, out: Path | str | None, fingerprint: dict, resume: bool,
                 overwrite: bool = False) -> None:
        self.path = progress_path(out) if out is not None else None
        self.url, self._uploaded = None, 0.0
        if isinstance(self.path, str):  # a URL: work on a local copy
            self.url, self._tmp = self.path, tempfile.TemporaryDirectory(prefix="geodet-")
            self.path = Path(self._tmp.name) / "progress.sqlite"
            if resume:
                storage.download(self.url, self.path)
        key = json.dumps(fingerprint, sort_keys=True)
        if self.path is not None and self.path.exists() and not resume:
            self._discard(overwrite)
        try:
            self.db = sqlite3.connect(self.path or ":memory:")
            for pragma in PRAGMAS if self.path is not None else ():
                self.db.execute(pragma)
            self.db.executescript(SCHEMA)
            row = self.db.execute("SELECT fingerprint FROM run").fetchone()
            if row is None:
                with self.db:
                    self.db.execute("INSERT INTO run VALUES (?)", (key,))
        except sqlite3.Error as e:
            raise OutputError.writing(self.path, e) from None
        if row is not None and row[0] != key:
            self.db.close()
            raise InputError(
                f"{self.url or self.path} belongs to a run with other inputs or settings: "
                "run the same command to resume it, or use --overwrite without --resume "
                "to start afresh")

    def _discard(self, overwrite: bool) -> None:
        """An interrupted run's record, found by a run without ``--resume``."""
        assert self.path is not None
        tiles = _tiles_in(self.path)
        what = f"{self.path} holds the progress of an interrupted run ({tiles} tiles done)"
        if tiles and not overwrite:
            raise InputError(f"{what}: add --resume to continue it, or --overwrite to "
                             "start afresh")
        if tiles:
            log.warning("%s: starting afresh (--overwrite)", what)
        _remove(self.path)

    def __enter__(self) -> ResumeRecord:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if self.url is not None and self.path.exists():  # stopped before the end
            self._upload()
        self.db.close()
        if self.url is not None or error is None or self.path is None \
                or not self.path.exists():
            return
        tiles = _tiles_in(self.path)
        if not tiles:  # nothing to keep
            _remove(self.path)
        elif isinstance(error, KeyboardInterrupt | OutputError):
            error.add_note(f"{tiles} tiles done are kept in {self.path}: run the same "
                           "command with --resume to continue")

    def done(self, sizes: Sequence[int]) -> Resumed:
        """The tiles already done (per scene of ``sizes`` tiles), with their detections."""
        masks = tuple(np.zeros(n, dtype=bool) for n in sizes)
        for scene, tile_id in self.db.execute(
                "SELECT scene, tile_id FROM tiles WHERE status = 'done'"):
            masks[scene][tile_id] = True
        rows = np.array(self.db.execute(
            "SELECT d.scene, d.tile_id, x0, y0, x1, y1, score, class_id, angle "
            "FROM detections d JOIN tiles t USING (scene, tile_id) "
            "WHERE t.status = 'done'").fetchall(), dtype=np.float64).reshape(-1, 9)
        dets = Detections.build(rows[:, 2:6], rows[:, 6], rows[:, 7], rows[:, 0],
                                rows[:, 1], rows[:, 8])
        return Resumed(masks, dets)

    def outcomes(self, scene: int, lo: int, hi: int) -> dict[int, TileOutcome]:
        """The recorded outcomes of the tiles ``lo <= tile_id < hi`` of ``scene``."""
        return {t: TileOutcome(scene, t, TileStatus(st), n, e) for t, st, n, e in
                self.db.execute("SELECT tile_id, status, n_detections, error FROM tiles "
                                "WHERE scene = ? AND tile_id >= ? AND tile_id < ?",
                                (scene, lo, hi))}

    def failed_scenes(self) -> set[int]:
        """The scenes with at least one failed tile."""
        return {s for (s,) in self.db.execute(
            "SELECT DISTINCT scene FROM tiles WHERE status = 'failed'")}

    def failed_tiles(self, scene: int) -> np.ndarray:
        """The ids of the failed tiles of ``scene``."""
        return np.array([t for (t,) in self.db.execute(
            "SELECT tile_id FROM tiles WHERE scene = ? AND status = 'failed'", (scene,))],
            dtype=np.int64)

    def add(self, result: ChunkResult) -> None:
        """Store one chunk's outcomes and detections in a single transaction."""
        if self.path is None:
            return
        try:
            self._store(result)
        except sqlite3.Error as e:
            raise OutputError.writing(self.path, e) from None
        if self.url is not None and time.monotonic() - self._uploaded >= UPLOAD_EVERY_S:
            self._upload()

    def _store(self, result: ChunkResult) -> None:
        d = result.detections
        with self.db:
            keys = [(o.scene, o.tile_id) for o in result.tiles]
            self.db.executemany("DELETE FROM detections WHERE scene = ? AND tile_id = ?",
                                keys)
            self.db.executemany(
                "INSERT OR REPLACE INTO tiles VALUES (?, ?, ?, ?, ?)",
                [(o.scene, o.tile_id, str(o.status), o.n_detections, o.error)
                 for o in result.tiles])
            self.db.executemany(
                "INSERT INTO detections VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                zip(d.scene_ids.tolist(), d.tile_ids.tolist(), *d.boxes.T.tolist(),
                    d.scores.tolist(), d.class_ids.tolist(), d.angles.tolist(),
                    strict=True))

    def _upload(self) -> None:
        try:  # everything committed into the file itself: the upload is the file alone
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as e:
            raise OutputError.writing(self.path, e) from None
        storage.upload(self.path, self.url)
        self._uploaded = time.monotonic()

    def finish(self) -> None:
        """The output is complete: drop the progress file."""
        self.db.close()
        if self.path is not None:
            _remove(self.path)
        if self.url is not None:
            storage.remove(self.url)


def _remove(path: Path) -> None:
    """Remove a record file and its WAL files (a killed run leaves them): a WAL file
    left beside a new record of the same name would be taken for its own."""
    for name in (path, *(path.with_name(path.name + side) for side in SIDE_FILES)):
        with contextlib.suppress(FileNotFoundError):
            os.remove(name)
