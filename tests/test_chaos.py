"""Chaos (issue 15): SIGTERM, SIGINT and SIGKILL at random moments of real runs
(Ray's start-up, mid-run, while writing), each run resuming the previous one; after
every signal the invariants hold, and the last resume gives the detections of an
uninterrupted run. Bounded: three interrupted runs, on either engine, and one to
finish."""

from __future__ import annotations

import hashlib
import random
import signal
import subprocess
import time

import pyogrio
import pytest

import geodet
from tests.processes import left_after, marked_env, ray_sessions_of
from tests.test_resume import cli, squares_everywhere

#: Exit statuses by signal: geodet's own stop, or the signal itself when it lands
#: before geodet has started anything (Python is still importing), or 0 when the run
#: finished first.
EXPECTED = {signal.SIGTERM: {0, 143, -signal.SIGTERM}, signal.SIGINT: {0, 130, -signal.SIGINT},
            signal.SIGKILL: {0, -signal.SIGKILL}}


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def same_detections(path, reference) -> bool:
    got = pyogrio.read_dataframe(path, layer="detections")
    return len(got) == len(reference) and \
        got.drop(columns="geometry").equals(reference.drop(columns="geometry")) and \
        all(a.equals_exact(b, 0) for a, b in zip(got.geometry, reference.geometry,
                                                 strict=True))


@pytest.mark.usefixtures("ray_local")
def test_signals_at_random_moments_lose_nothing(tmp_path, squares_model):
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    scene = squares_everywhere(tmp_path, size=800)
    out = tmp_path / "o.gpkg"
    options = {"batch_size": 1, "overlap": 0.5}
    geodet.detect(scene, squares_model, out, progress=False, **options)  # the previous one
    reference = pyogrio.read_dataframe(out, layer="detections")
    assert len(reference) > 50
    args = [scene, "--model", squares_model, "--out", out, "--batch-size", "1",
            "--overlap", "0.5", "--resume", "--overwrite"]
    signals = [signal.SIGTERM, signal.SIGINT, signal.SIGKILL]
    rng.shuffle(signals)
    for sig in signals:
        before = digest(out)
        env, tag = marked_env()
        started = time.time()
        engine = rng.choice(["threads", "ray"])  # a run resumes either engine's record
        run = subprocess.Popen(cli(*args, "--engine", engine), env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        delay = rng.uniform(1.0, 9.0)
        time.sleep(delay)
        run.send_signal(sig)
        _, err = run.communicate(timeout=120)
        what = (f"{sig.name} after {delay:.1f} s on {engine} (seed {seed}): exit "
                f"{run.returncode}")
        assert run.returncode in EXPECTED[sig], f"{what}\n{err[-2000:]}"
        assert left_after(tag) == [], what
        assert ray_sessions_of(run.pid, started) == [], what
        assert digest(out) == before or same_detections(out, reference), what

    final = subprocess.run(cli(*args), env=marked_env()[0], capture_output=True, text=True,
                           timeout=300)
    assert final.returncode == 0, final.stderr[-2000:]
    assert same_detections(out, reference), f"seed {seed}"
    tiles = pyogrio.read_dataframe(out, layer="tiles")
    assert tiles["tile_id"].is_unique and (tiles["status"] == "done").all()
    assert not (tmp_path / "o.gpkg.progress").exists()
