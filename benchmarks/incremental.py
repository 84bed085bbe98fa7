"""What a nightly incremental run costs against redoing the whole collection.

    python benchmarks/incremental.py --scenes 4 --size 2048

Generates a folder of aerial scenes (bundled detector's cars and trucks), then on one
local Ray instance: a one-shot run over all of them; and three "nights" with
``incremental=True`` on a folder that grows from all but one scene to all of them,
then stays as it is. Prints one row per run: seconds, tiles processed, detections in
the output. The last night is the price of "nothing new": reading the output and
checking every scene's size and modification time.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import pyogrio

import geodet
from geodet import engine
from geodet.demo import bundled_model
from geodet.synthetic import vehicle_scene


def run(label: str, scenes: str | list[str], out: Path, **options) -> tuple:
    t = time.perf_counter()
    found = geodet.detect(scenes, bundled_model(), out, progress=False, **options)
    seconds = time.perf_counter() - t
    total = len(pyogrio.read_dataframe(out, layer="detections", read_geometry=False))
    return label, seconds, found.attrs["geodet"]["tiles_done"], total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=4)
    parser.add_argument("--size", type=int, default=2048)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="geodet-incremental-"))
    made, folder = work / "made", work / "flights"
    made.mkdir()
    folder.mkdir()
    names = [f"flight-{k}.tif" for k in range(args.scenes)]
    for k, name in enumerate(names):
        vehicle_scene(made / name, size=args.size, seed=k)
    for name in names[:-1]:
        shutil.copy2(made / name, folder / name)
    pattern = str(folder / "*.tif")
    with engine.ray_cluster(None):  # one Ray instance for every run
        geodet.detect(str(made / names[0]), bundled_model(), progress=False)  # warm-up
        rows = [run(f"one-shot, {args.scenes} scenes", [str(made / n) for n in names],
                    work / "oneshot.gpkg")]
        out = work / "nightly.gpkg"
        rows.append(run(f"night 1: {args.scenes - 1} scenes, all new", pattern, out,
                        incremental=True))
        shutil.copy2(made / names[-1], folder / names[-1])
        rows.append(run("night 2: 1 new scene", pattern, out, incremental=True))
        rows.append(run("night 3: nothing new", pattern, out, incremental=True))
    shutil.rmtree(work)
    print(f"\n{args.scenes} scenes of {args.size} x {args.size} px, bundled detector\n")
    print("| run | seconds | tiles processed | detections in the output |")
    print("| --- | ---: | ---: | ---: |")
    for label, seconds, tiles, total in rows:
        print(f"| {label} | {seconds:.1f} | {tiles} | {total} |")


if __name__ == "__main__":
    main()
