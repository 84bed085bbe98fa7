"""The progress record's file, without Ray: what a killed writer leaves, what the
driver's per-chunk statements cost (benchmarks/dispatch.py)."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import textwrap

import pytest

from geodet.detections import ChunkResult, Detections, TileOutcome, TileStatus
from geodet.errors import InputError
from geodet.resume import ResumeRecord


def chunk(tiles: range, per_tile: int = 2) -> ChunkResult:
    outcomes = tuple(TileOutcome(0, t, TileStatus.DONE, per_tile) for t in tiles)
    ids = [t for t in tiles for _ in range(per_tile)]
    dets = Detections.build([[t + 0.5, t, t + 5, t + 5.25] for t in ids], [0.75] * len(ids),
                            0, 0, ids)
    return ChunkResult(dets, outcomes, "CPUExecutionProvider")


WRITER = """
import sys
from pathlib import Path
from tests.test_resume_record import chunk
from geodet.resume import ResumeRecord
record = ResumeRecord(Path(sys.argv[1]), {"run": 1}, resume=False)
for k in range(10):
    record.add(chunk(range(32 * k, 32 * k + 32)))
print("recorded", flush=True)
sys.stdin.read()  # until killed
"""


def test_every_recorded_chunk_survives_a_killed_writer(tmp_path):
    """Commits do not wait for the disk (WAL, synchronous=NORMAL), yet every chunk
    recorded before a SIGKILL is there for --resume, and the WAL files go with the
    record."""
    out = tmp_path / "o.gpkg"
    writer = subprocess.Popen([sys.executable, "-c", textwrap.dedent(WRITER), str(out)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline() == "recorded\n"
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    assert (tmp_path / "o.gpkg.progress-wal").exists(), "the chunks are in the WAL"
    with pytest.raises(InputError, match=r"\(320 tiles done\): add --resume"):
        ResumeRecord(out, {"run": 1}, resume=False)
    with ResumeRecord(out, {"run": 1}, resume=True) as record:
        resumed = record.done([400])
        assert resumed.count == 320 and len(resumed.detections) == 640
        assert resumed.detections.boxes[0].tolist() == [0.5, 0, 5, 5.25]
    assert [p.name for p in tmp_path.iterdir()] == ["o.gpkg.progress"]
    with ResumeRecord(out, {"run": 1}, resume=False, overwrite=True) as record:
        assert record.done([400]).count == 0
        record.finish()
    assert list(tmp_path.iterdir()) == []


def test_a_chunk_finds_its_tiles_detections_by_index(tmp_path):
    """The DELETE that makes re-recording a tile idempotent looks its rows up by index:
    a scan of the whole table per tile made the driver's loop quadratic in the run."""
    with ResumeRecord(tmp_path / "o.gpkg", {"run": 1}, resume=False) as record:
        record.add(chunk(range(4)))
        record.add(chunk(range(2, 6), per_tile=1))  # tiles 2 and 3 again: replaced
        plan = record.db.execute("EXPLAIN QUERY PLAN DELETE FROM detections "
                                 "WHERE scene = ? AND tile_id = ?", (0, 1)).fetchall()
        assert "USING INDEX detections_tile" in " ".join(str(row) for row in plan)
        dets = record.done([6]).detections
        assert sorted(dets.tile_ids.tolist()) == [0, 0, 1, 1, 2, 3, 4, 5]
        record.finish()


def test_a_record_made_before_the_index_gets_it_on_resume(tmp_path):
    progress = tmp_path / "o.gpkg.progress"
    with ResumeRecord(tmp_path / "o.gpkg", {"run": 1}, resume=False) as record:
        record.add(chunk(range(3)))
        record.db.execute("DROP INDEX detections_tile")
    with ResumeRecord(tmp_path / "o.gpkg", {"run": 1}, resume=True) as record:
        assert record.done([3]).count == 3
    with sqlite3.connect(progress) as db:
        assert db.execute("SELECT name FROM sqlite_master WHERE type = 'index' "
                          "AND name = 'detections_tile'").fetchall()
