"""Incremental runs (``--incremental``): only the scenes an existing output lacks.

An output's ``geodet_scenes`` table records each scene it holds: path, name (the
``scene`` column) and signature (the object's ETag, else its size and modification
time). An incremental run reads the output (`Previous.read`), runs only the scenes
that are new or whose signature changed (`Previous.select`), and writes the output
again (atomically, like any run) with every other scene's detections and tiles
carried over unchanged and a changed scene's replaced (`Previous.carry`). The
previous ``geodet_runs`` rows are kept and the run adds its own. An output made with
another model or other detection settings is refused (`Previous.check`).
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pyogrio

from geodet import storage
from geodet.errors import InputError, one_line
from geodet.inputs import SceneRef
from geodet.remote import fsspec_url
from geodet.write import DETECTIONS_LAYER, RUNS_TABLE, SCENES_TABLE, TILES_LAYER, Output

SCENE_COLUMNS = ["path", "scene", "signature"]
Layers = dict[str, gpd.GeoDataFrame]
TileBatch = tuple[str, gpd.GeoDataFrame]  # a batch of a tiles layer (`geodet.layers`)


def signature(path: str) -> str:
    """What identifies this version of a scene: its ETag, else size and mtime."""
    fs, where = storage.filesystem(fsspec_url(path))
    try:
        info = fs.info(where)
    except Exception as e:  # clients raise their own types (botocore, aiohttp...)
        raise InputError(one_line(f"cannot check whether {path} changed", e)) from None
    etag = info.get("ETag") or info.get("etag")
    if etag:
        return f"etag {etag}"
    modified = next((info[k] for k in ("mtime", "LastModified", "Last-Modified",
                                       "last_modified") if info.get(k)), "unknown")
    return f"size {info.get('size')} modified {modified}"


@dataclass(frozen=True)
class Previous:
    """What an existing output holds (all empty when there is none yet)."""

    layers: dict[str, gpd.GeoDataFrame]  # detections* and tiles* layers by name
    runs: pd.DataFrame
    scenes: pd.DataFrame  # SCENE_COLUMNS

    @classmethod
    def read(cls, out: Output) -> Previous:
        if isinstance(out, str):  # a URL: read a local copy
            with tempfile.TemporaryDirectory(prefix="geodet-") as folder:
                local = Path(folder) / "previous.gpkg"
                storage.download(out, local)
                return cls.read(local)
        if not out.exists():
            return cls({}, pd.DataFrame(), pd.DataFrame(columns=SCENE_COLUMNS))
        names = [str(n) for n, _ in pyogrio.list_layers(out)]
        if SCENES_TABLE not in names:
            raise InputError(f"{out} was not written by an incremental run (it has no "
                             f"{SCENES_TABLE} table): start a new output")
        return cls({n: pyogrio.read_dataframe(out, layer=n) for n in names
                    if n.startswith((DETECTIONS_LAYER, TILES_LAYER))},
                   pyogrio.read_dataframe(out, layer=RUNS_TABLE),
                   pyogrio.read_dataframe(out, layer=SCENES_TABLE))

    def select(self, refs: list[SceneRef]) -> list[SceneRef]:
        """The scenes to run: new or changed since the output was written, each with
        the signature it has now."""
        known = dict(zip(self.scenes["path"], self.scenes["signature"], strict=True))
        signed = [dataclasses.replace(r, signature=signature(r.path)) for r in refs]
        return [r for r in signed if known.get(r.path) != r.signature]

    def check(self, settings: dict, out: Output) -> None:
        """Refuse to extend an output made with another model or other settings."""
        if self.runs.empty:
            return
        made_with = json.loads(self.runs["detection_settings"].iloc[-1])
        differ = sorted(k for k in {*made_with, *settings}
                        if made_with.get(k) != settings.get(k))
        if differ:
            raise InputError(f"{out} was made with another model or other settings "
                             f"({', '.join(differ)}): start a new output, or run without "
                             "--incremental and with --overwrite to redo it all")

    def extend(self, refs: tuple[SceneRef, ...], names: list[str], detections: Layers,
               tiles: Iterable[TileBatch], run: dict, failed: set[int],
               ) -> tuple[Layers, Iterator[TileBatch], list[dict], dict[str, pd.DataFrame]]:
        """The whole output after this run: its ``detections`` and ``tiles`` layers (by
        name) added to the previous ones, less their rows of the scenes run again;
        every run; the scenes table, where the scenes with ``failed`` tiles (indexes
        into ``refs``) have no signature, so that the next run does them again."""
        paths = [r.path for r in refs]
        rerun = {*self.scenes.loc[self.scenes["path"].isin(paths), "scene"], *names}
        kept = {n: f[~f["scene"].isin(rerun)] for n, f in self.layers.items()}
        crs = {n: f.crs for n, f in kept.items()}
        merged = {n: f for n, f in kept.items() if n.startswith(DETECTIONS_LAYER)}
        for name, frame in detections.items():
            merged[name] = (pd.concat([merged[name], frame.to_crs(crs[name])],
                                      ignore_index=True) if name in merged else frame)
        old_tiles = [(n, f) for n, f in kept.items() if n.startswith(TILES_LAYER)]
        new_tiles = ((n, f.to_crs(crs[n]) if n in crs else f) for n, f in tiles)
        new = pd.DataFrame({"path": paths, "scene": names,
                            "signature": [None if i in failed else r.signature
                                          for i, r in enumerate(refs)]},
                           columns=SCENE_COLUMNS)
        old = self.scenes[~self.scenes["path"].isin(paths)]
        scenes = pd.concat([old, new], ignore_index=True) if len(old) else new
        return (merged, chain(old_tiles, new_tiles), [*self.runs.to_dict("records"), run],
                {SCENES_TABLE: scenes})
