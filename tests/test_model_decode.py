import numpy as np
import onnx
import pytest

from geodet.decode import decode_ultralytics, detect_layout
from geodet.errors import InputError
from geodet.model import inspect_model, parse_names
from tools.toy_models import bright_squares


def test_decode_ultralytics_layout():
    # Two images, 2 classes, 3 candidates: [B, 4 + nc, N] with cx, cy, w, h.
    out = np.zeros((2, 6, 3), np.float32)
    out[0, :, 0] = [50, 40, 10, 20, 0.9, 0.1]
    out[0, :, 1] = [10, 10, 4, 4, 0.1, 0.2]  # below conf
    out[0, :, 2] = [5, 6, 2, 2, 0.3, 0.8]
    out[1, :, 0] = [1, 1, 2, 2, 0.0, 0.5]
    [(b0, s0, c0, _), (b1, _s1, c1, _)] = decode_ultralytics([out], 0.25, (64, 64))
    np.testing.assert_allclose(b0, [[45, 30, 55, 50], [4, 5, 6, 7]])
    np.testing.assert_allclose(s0, [0.9, 0.8])
    assert c0.tolist() == [0, 1]
    np.testing.assert_allclose(b1, [[0, 0, 2, 2]])
    assert c1.tolist() == [1]


@pytest.mark.parametrize("raw,expected", [
    ("{0: 'car', 1: 'truck'}", {0: "car", 1: "truck"}),
    ('{"0": "car", "1": "truck"}', {0: "car", 1: "truck"}),
    ('["car", "truck"]', {0: "car", 1: "truck"}),
    ("not a dict", {}),
])
def test_parse_names_dialects(raw, expected):
    assert parse_names(raw) == expected


def test_inspect_model(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(bright_squares(size=64, batch=1, names={0: "a", 1: "b"}), path)
    info = inspect_model(path)
    assert (info.batch, info.channels, info.height, info.width) == (1, 3, 64, 64)
    assert info.names == {0: "a", 1: "b"}
    assert info.output_shapes == ((1, 6, 53 * 53),)
    assert len(info.sha256) == 64
    assert detect_layout(info) == ("ultralytics", "output shape")


def test_unknown_layout_says_what_is_supported(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(bright_squares(size=64), path)
    info = inspect_model(path)
    weird = info.__class__(**{**info.__dict__, "output_shapes": ((None, 100, 3),)})
    with pytest.raises(InputError, match=r"supported layouts: ultralytics.*--layout"):
        detect_layout(weird)


def test_not_onnx(tmp_path):
    path = tmp_path / "m.onnx"
    path.write_text("hello")
    with pytest.raises(InputError, match="cannot load model as ONNX"):
        inspect_model(path)


def test_missing_model(tmp_path):
    with pytest.raises(InputError, match="model not found"):
        inspect_model(tmp_path / "nope.onnx")
