import pytest

from geodet.errors import InputError
from geodet.inputs import expand_scenes


def test_paths_patterns_and_lists(tmp_path):
    for name in ("b.tif", "a.tif", "sub/c.tif"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    listing = tmp_path / "scenes.txt"
    listing.write_text("# my scenes\na.tif\n\n/vsis3/bucket/x.tif  # remote\n"
                       "https://example.invalid/y.tif\n")
    got = expand_scenes([str(tmp_path / "*.tif"), str(listing), str(tmp_path / "**/c.tif"),
                         str(tmp_path / "a.tif")])
    assert [ref.path for ref in got] == [
        str(tmp_path / "a.tif"), str(tmp_path / "b.tif"), "/vsis3/bucket/x.tif",
        "https://example.invalid/y.tif", str(tmp_path / "sub/c.tif")]


def test_pattern_without_match(tmp_path):
    with pytest.raises(InputError, match="no file matches"):
        expand_scenes([str(tmp_path / "*.tif")])


def test_empty_list(tmp_path):
    listing = tmp_path / "none.txt"
    listing.write_text("# nothing\n\n")
    with pytest.raises(InputError, match="names no scene"):
        expand_scenes([str(listing)])
