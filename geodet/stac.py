"""STAC input: scenes from a STAC item, an item collection or a static catalog.

A ``.json`` scene argument (a local file or a URL) is read with pystac: an item gives
one scene, an item collection or a catalog (walked recursively) one per item. Each
scene is the item's asset named by ``asset`` (``--asset visual``), else the item's
only GeoTIFF asset; its ``scene`` name is the item's id, and its acquisition time
the item's ``datetime`` (or ``start_datetime``) when the item has one.
"""

from __future__ import annotations

from collections.abc import Iterable

import pystac
from pystac.utils import make_absolute_href

from geodet.errors import InputError
from geodet.inputs import SceneRef

GEOTIFF = "image/tiff"  # also the start of the COG media type, with "; application=..."


def stac_scenes(source: str, asset: str | None) -> list[SceneRef]:
    """One scene per item of the STAC document at ``source``."""
    items = list(_items(source))
    if not items:
        raise InputError(f"the STAC document {source} holds no item")
    return [_scene(item, source, asset) for item in items]


def _items(source: str) -> Iterable[pystac.Item]:
    try:
        document = pystac.StacIO.default().read_json(source)
        if document.get("type") == "FeatureCollection":
            return pystac.ItemCollection.from_dict(document)
        stac = pystac.read_dict(document, href=source)
    except (OSError, ValueError, KeyError, pystac.STACError, pystac.STACTypeError) as e:
        raise InputError(f"cannot read {source} as a STAC item, item collection or "
                         f"catalog: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
                         ) from None
    if isinstance(stac, pystac.Item):
        return [stac]
    if isinstance(stac, pystac.Catalog):
        return stac.get_items(recursive=True)
    raise InputError(f"{source} is a STAC {type(stac).__name__}, not an item, item "
                     "collection or catalog")


def _scene(item: pystac.Item, source: str, asset: str | None) -> SceneRef:
    if asset is None:
        tiffs = [k for k, a in item.assets.items() if (a.media_type or "").startswith(GEOTIFF)]
        if len(tiffs) != 1:
            raise InputError(f"STAC item {item.id} has {len(tiffs)} GeoTIFF assets "
                             f"(assets: {', '.join(item.assets) or 'none'}): choose one "
                             "with --asset")
        asset = tiffs[0]
    if asset not in item.assets:
        raise InputError(f"STAC item {item.id} has no asset {asset!r}: its assets are "
                         f"{', '.join(item.assets) or 'none'}")
    href = make_absolute_href(item.assets[asset].href, item.get_self_href() or source)
    acquired = item.datetime or item.common_metadata.start_datetime
    return SceneRef(href, item.id, acquired)
