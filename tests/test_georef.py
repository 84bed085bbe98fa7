import numpy as np
import shapely
from affine import Affine
from rasterio.transform import from_origin, xy

from geodet.georef import boxes_to_polygons


def test_first_pixel_box_is_the_first_pixel_footprint():
    t = from_origin(500_000, 5_400_000, 0.5, 0.5)
    [poly] = boxes_to_polygons(np.array([[0.0, 0.0, 1.0, 1.0]]), t)
    expected = shapely.box(500_000, 5_400_000 - 0.5, 500_000.5, 5_400_000)
    assert poly.equals(expected)
    # rasterio's xy() is the pixel *centre*: the footprint's centroid, not its corner.
    cx, cy = xy(t, 0, 0)
    assert shapely.centroid(poly).equals(shapely.Point(cx, cy))


def test_box_through_a_rotated_transform():
    t = Affine.translation(1000, 2000) * Affine.rotation(30) * Affine.scale(2, -2)
    [poly] = boxes_to_polygons(np.array([[10.0, 20.0, 14.0, 23.0]]), t)
    corners = [t * (10, 20), t * (14, 20), t * (14, 23), t * (10, 23)]
    np.testing.assert_allclose(np.array(poly.exterior.coords)[:4], corners)
    assert abs(poly.area - 4 * 3 * 4) < 1e-9  # area scales with |det| = 4
