"""STAC input: a static catalog and an item collection the tests write with pystac,
pointing at generated COGs on local disk and on the loopback HTTP server."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyogrio
import pystac
import pytest
import rasterio
import rasterio.shutil
import shapely
from rasterio.warp import transform_bounds

import geodet
from geodet.errors import InputError
from tests.helpers import footprint, scene_with_squares, write_tif

pytestmark = pytest.mark.usefixtures("ray_local")

#: item id -> (acquisition time, top-left corners of its bright squares)
ITEMS = {"flight-0412": (datetime(2026, 4, 12, 9, 30, tzinfo=UTC), [(20, 30)]),
         "flight-0413": (datetime(2026, 4, 13, 10, 0, tzinfo=UTC), [(150, 60), (40, 200)])}


def write_cog(path: Path, corners: list[tuple[int, int]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    plain = write_tif(path.with_suffix(".plain.tif"), scene_with_squares((256, 256), corners))
    rasterio.shutil.copy(plain, path, driver="COG", blocksize=128)
    plain.unlink()
    return path


def stac_item(item_id: str, cog: Path, when: datetime, href: str) -> pystac.Item:
    with rasterio.open(cog) as ds:
        bbox = list(transform_bounds(ds.crs, "EPSG:4326", *ds.bounds))
    item = pystac.Item(item_id, shapely.geometry.mapping(shapely.box(*bbox)), bbox, when, {})
    item.add_asset("visual", pystac.Asset(href, media_type=pystac.MediaType.COG,
                                          roles=["visual"]))
    item.add_asset("thumbnail", pystac.Asset(href.replace(".tif", ".png"),
                                             media_type=pystac.MediaType.PNG))
    return item


def write_catalog(root: Path) -> Path:
    """A self-contained static catalog: catalog.json, one folder per item, each item's
    COG beside it, referenced by a relative href."""
    catalog = pystac.Catalog("flights", "drone flights")
    for item_id, (when, corners) in ITEMS.items():
        cog = write_cog(root / item_id / f"{item_id}.tif", corners)
        catalog.add_item(stac_item(item_id, cog, when, f"./{cog.name}"))
    catalog.normalize_hrefs(str(root))
    catalog.save(pystac.CatalogType.SELF_CONTAINED)
    return root / "catalog.json"


def expected(result) -> None:
    """Detections named by item id and dated, at the squares' true footprints."""
    assert result.crs == "EPSG:32633"
    for item_id, (when, corners) in ITEMS.items():
        mine = result[result["scene"] == item_id]
        assert sorted(g.bounds for g in mine.geometry) == sorted(
            footprint(x, y).bounds for x, y in corners)
        assert (mine["acquired"] == pd.Timestamp(when)).all()


def test_static_catalog_on_local_disk(tmp_path, squares_model):
    catalog = write_catalog(tmp_path / "stac")
    out = tmp_path / "o.gpkg"
    expected(geodet.detect(catalog, squares_model, out, asset="visual", progress=False))
    dets = pyogrio.read_dataframe(out, layer="detections")
    assert set(dets["scene"]) == set(ITEMS)
    assert pd.to_datetime(dets["acquired"], utc=True).min() == pd.Timestamp(
        ITEMS["flight-0412"][0])
    assert set(pyogrio.read_dataframe(out, layer="tiles")["scene"]) == set(ITEMS)


def test_catalog_and_item_collection_over_http(tmp_path, squares_model, http_server):
    catalog = write_catalog(http_server.root)
    expected(geodet.detect(f"{http_server.url}/catalog.json", squares_model,
                           asset="visual", progress=False))
    for item_id in ITEMS:
        assert http_server.bytes_sent(f"{item_id}/{item_id}.tif") > 0

    items = [stac_item(i, http_server.root / i / f"{i}.tif", when,
                       f"{http_server.url}/{i}/{i}.tif")
             for i, (when, _) in ITEMS.items()]
    pystac.ItemCollection(items).save_object(dest_href=str(tmp_path / "items.json"))
    expected(geodet.detect(tmp_path / "items.json", squares_model, asset="visual",
                           progress=False))
    # one item, read from the server, without --asset: its only GeoTIFF asset
    single = next(pystac.read_file(str(catalog)).get_items("flight-0412", recursive=True))
    single.assets.pop("thumbnail")
    single.assets["visual"].href = f"{http_server.url}/flight-0412/flight-0412.tif"
    single.save_object(include_self_link=False, dest_href=str(tmp_path / "one.json"))
    result = geodet.detect(tmp_path / "one.json", squares_model, progress=False)
    assert result["scene"].tolist() == ["flight-0412"]


def test_asset_errors_name_the_assets(tmp_path, squares_model):
    catalog = write_catalog(tmp_path / "stac")
    with pytest.raises(InputError, match=r"has no asset 'red': its assets are visual, "
                                         r"thumbnail"):
        geodet.detect(catalog, squares_model, asset="red", progress=False)
    item = next(pystac.read_file(str(catalog)).get_items("flight-0412", recursive=True))
    item.assets["second"] = item.assets["visual"].clone()
    item.save_object(include_self_link=False, dest_href=str(tmp_path / "two.json"))
    with pytest.raises(InputError, match=r"has 2 GeoTIFF assets .*: choose one with --asset"):
        geodet.detect(tmp_path / "two.json", squares_model, progress=False)
    (tmp_path / "bad.json").write_text('{"type": "Feature"}')
    with pytest.raises(InputError, match=r"cannot read .*bad\.json as a STAC item"):
        geodet.detect(tmp_path / "bad.json", squares_model, progress=False)
