"""Telling whoever watches a run how it goes, on stderr.

- On a terminal: a tqdm bar.
- Without one (a pod log, cron mail): a plain line every ``progress_every`` seconds,
  never carriage returns.
- ``log_format="json"``: every line is one JSON object with an ``event``: ``start``
  (settings, scenes, tiles), ``progress`` every ``progress_every`` seconds (tiles
  done and total, tiles/s, detections so far, ETA), ``warning`` (geodet's log
  records), and ``done`` with the run's counts; the CLI adds ``error``.
- ``quiet``: errors only.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from datetime import UTC, datetime
from typing import TextIO

from tqdm import tqdm

from geodet.detections import ChunkResult, TileStatus
from geodet.job import Job
from geodet.options import Options

log = logging.getLogger("geodet")


def json_line(event: str, **fields) -> str:
    """One log event as a JSON object, stamped with the UTC time."""
    return json.dumps({"time": datetime.now(UTC).isoformat(timespec="milliseconds"),
                       "event": event, **fields}, default=str)


class _JsonHandler(logging.Handler):
    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self.stream = stream

    def emit(self, record: logging.LogRecord) -> None:
        print(json_line(record.levelname.lower(), message=record.getMessage()),
              file=self.stream, flush=True)


class Reporter:
    """The progress of one run (see module doc); a context manager that stops its
    ticker and restores logging on every path."""

    def __init__(self, options: Options, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.every = options.progress_every
        self.json = options.log_format == "json" and not options.quiet
        self.show = options.progress and not options.quiet
        self.quiet = options.quiet
        self.total = self.done = self.failed = self.detections = 0
        self.started = time.monotonic()
        self._bar: tqdm | None = None
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick, daemon=True)
        self._handler = _JsonHandler(self.stream) if self.json else None
        self._saved = (log.level, log.propagate)

    def __enter__(self) -> Reporter:
        if self._handler is not None:
            log.addHandler(self._handler)
            log.propagate = False
        if self.quiet:
            log.setLevel(logging.ERROR)
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._ticker.is_alive():
            self._ticker.join()
        if self._bar is not None:
            self._bar.close()
        if self._handler is not None:
            log.removeHandler(self._handler)
        log.setLevel(self._saved[0])
        log.propagate = self._saved[1]

    def start(self, job: Job, todo: int) -> None:
        """The run is planned: it will process ``todo`` tiles."""
        self.total, self.started = todo, time.monotonic()
        if self.json:
            self._write(json_line(
                "start", scenes=[sc.path for sc in job.settings.scenes],
                tiles=job.n_tiles, tiles_to_run=self.total, tiles_empty=job.n_empty,
                settings=job.plan()["settings"]))
        if not self.show:
            return
        if not self.json and self.stream.isatty():
            self._bar = tqdm(total=self.total, unit="tile", desc="detect",
                             dynamic_ncols=True, file=self.stream)
        else:
            self._ticker.start()

    def update(self, result: ChunkResult) -> None:
        """A chunk of tiles is finished."""
        self.done += len(result.tiles)
        self.failed += sum(o.status == TileStatus.FAILED for o in result.tiles)
        self.detections += len(result.detections)
        if self._bar is not None:
            self._bar.update(len(result.tiles))

    def finish(self, run: dict, out: str | None) -> None:
        """The run is complete: its counts, from its ``geodet_runs`` row."""
        self._stop.set()
        if self.json:
            self._write(json_line(
                "done", tiles_done=run["tiles_done"], tiles_failed=run["tiles_failed"],
                tiles_empty=run["tiles_empty"], detections=run["detections"],
                seconds=run["seconds_total"], output=out))

    def snapshot(self) -> dict:
        """Where the run stands: tiles done of total, rate, detections, ETA."""
        elapsed = time.monotonic() - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else None
        return {"tiles_done": self.done, "tiles_total": self.total,
                "tiles_failed": self.failed, "tiles_per_s": round(rate, 3),
                "detections": self.detections,
                "eta_s": None if eta is None else round(eta, 1)}

    def _tick(self) -> None:
        while not self._stop.wait(self.every):
            s = self.snapshot()
            if self.json:
                self._write(json_line("progress", **s))
                continue
            eta = "?" if s["eta_s"] is None else _duration(s["eta_s"])
            percent = 100 * s["tiles_done"] / max(1, s["tiles_total"])
            self._write(f"geodet: {s['tiles_done']}/{s['tiles_total']} tiles "
                        f"({percent:.0f}%), {s['tiles_per_s']:.1f} tiles/s, "
                        f"{s['detections']} detections, ETA {eta}")

    def _write(self, line: str) -> None:
        print(line, file=self.stream, flush=True)


def _duration(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"
