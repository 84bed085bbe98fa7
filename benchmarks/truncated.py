"""A GeoTIFF cut short: wall time against the intact scene, and the failed tiles' reasons.

    python benchmarks/truncated.py --size 4096 --keep 0.6

Generates a scene with cars and trucks (kept in --workdir), writes a copy truncated
to the first --keep fraction of its bytes, runs the CLI in a fresh process on each
(bundled detector, embedded Ray), and prints one row per scene: wall time, tiles
done and failed, and the first failed tile's reason as the `tiles` layer records it.
Target (issue 15): the truncated scene within 2x the intact one's time.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import pyogrio

from geodet.demo import bundled_model
from geodet.synthetic import vehicle_scene


def run(scene: Path, out: Path) -> dict:
    cmd = [sys.executable, "-m", "geodet", "detect", str(scene), "--model", bundled_model(),
           "--out", str(out), "--overwrite", "--no-progress"]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode not in (0, 3):
        raise SystemExit(f"geodet failed ({done.returncode}): {done.stderr}")
    tiles = pyogrio.read_dataframe(out, layer="tiles", read_geometry=False)
    failed = tiles[tiles["status"] == "failed"]
    return {"wall": wall, "exit": done.returncode, "done": int((tiles["status"] == "done").sum()),
            "failed": len(failed), "reason": failed["error"].iloc[0] if len(failed) else ""}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--keep", type=float, default=0.6)
    parser.add_argument("--workdir", default="/tmp/geodet-bench")
    args = parser.parse_args()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    intact = work / f"scene{args.size}.tif"
    if not intact.exists():
        partial = intact.with_suffix(".partial.tif")
        vehicle_scene(partial, size=args.size, seed=args.size)
        partial.replace(intact)
    data = intact.read_bytes()
    cut = work / f"scene{args.size}-cut{args.keep:g}.tif"
    cut.write_bytes(data[:int(len(data) * args.keep)])
    rows = {"intact": run(intact, work / "intact.gpkg"),
            f"truncated at {args.keep:.0%}": run(cut, work / "truncated.gpkg")}
    base = rows["intact"]["wall"]
    print("| scene | wall s | x intact | exit | tiles done | tiles failed | first reason |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | --- |")
    for name, r in rows.items():
        print(f"| {name} | {r['wall']:.1f} | {r['wall'] / base:.2f} | {r['exit']} | "
              f"{r['done']} | {r['failed']} | {r['reason']} |")


if __name__ == "__main__":
    main()
