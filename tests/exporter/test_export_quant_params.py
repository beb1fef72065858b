"""quant_state -> validated sites, and the constants the exporter derives from them: int8
weights, int32 biases and float32 multipliers, checked on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest
from qgnn.exporter.quant_params import bias_int32, quantize_weight, read_sites


def entry(scale, zero_point, bits=8, signed=False, role="src"):
    scale, zero_point = np.atleast_1d(scale), np.atleast_1d(zero_point)
    return {"scale": [float(np.float32(s)) for s in scale],
            "zero_point": [int(z) for z in zero_point], "bits": bits, "signed": signed,
            "per_channel": scale.size > 1, "role": role}


def sites(**named):
    return read_sites({f"layers.0.q.{k}": v for k, v in named.items()}, "", 1)[0]


def test_quantize_weight_per_channel_rounds_half_to_even_and_saturates():
    s = sites(weight=entry([0.5, 0.25], [0, 0], signed=True, role="param"))
    w = np.array([[1.0, -0.75, 0.25], [0.125, 40.0, -0.375]], np.float32)
    # rows: w / 0.5 = [2, -1.5, 0.5] ; w / 0.25 = [0.5, 160, -1.5]
    np.testing.assert_array_equal(quantize_weight(w, s["weight"]),
                                  [[2, -2, 0], [0, 127, -2]])
    assert quantize_weight(w, s["weight"]).dtype == np.int8
    with pytest.raises(ValueError, match="2 channel scales for a weight with 3 rows"):
        quantize_weight(np.zeros((3, 2), np.float32), s["weight"])


def test_bias_int32_on_the_accumulator_grid():
    s = sites(x=entry(0.5, 10), weight=entry([0.25, 0.125], [0, 0], signed=True,
                                             role="param"))
    # steps 0.125 and 0.0625: 0.375 -> 3, -0.3125 -> -5; 0.15625 / 0.0625 = 2.5 -> 2 (even)
    np.testing.assert_array_equal(bias_int32(np.array([0.375, -0.3125], np.float32), s["x"],
                                             s["weight"]), [3, -5])
    np.testing.assert_array_equal(bias_int32(np.array([0.3125, 0.15625], np.float32),
                                             s["x"], s["weight"]), [2, 2])
    with pytest.raises(ValueError, match="does not fit int32"):
        bias_int32(np.array([1e9, 0], np.float32), s["x"], s["weight"])


def test_activation_sites_quantise_like_the_contract():
    s = sites(x=entry(0.5, 3, bits=4))
    x = np.array([-10.0, -1.5, -0.25, 0.25, 0.75, 100.0], np.float32)
    # x / 0.5 = [-20, -3, -0.5, 0.5, 1.5, 200] -> rint -> + 3 -> clamp [0, 15]
    np.testing.assert_array_equal(s["x"].quantize(x), [0, 0, 3, 3, 5, 15])
    np.testing.assert_array_equal(s["x"].dequantize(np.array([0, 3, 15])), [-1.5, 0, 6])
    scale, zp = s["x"].activation_params()
    assert (scale.dtype, scale.shape, zp.dtype, int(zp)) == (np.float32, (), np.uint8, 3)


@pytest.mark.parametrize(("key", "value", "message"), [
    ("layers.0.q.x", {**entry(0.5, 3), "bits": 9}, r"\.bits: expected an int in \[2, 8\]"),
    ("layers.0.q.x", {**entry(0.5, 3), "role": "nodes"}, r"\.role: expected one of"),
    ("layers.0.q.x", entry(0.5, 3, signed=True), "role 'src' with signed=True"),
    ("layers.0.q.x", entry(0.5, 256), r"zero_point: \[256\] is outside \[0, 255\]"),
    ("layers.0.q.w", entry(0.5, 1, signed=True, role="param"), "non-zero for a signed site"),
    ("layers.0.q.x", entry(-0.5, 3), "must be finite and > 0"),
    ("layers.0.q.x", {**entry(0.5, 3), "scale": [0.1]}, "must be float32 numbers"),
    ("layers.0.q.x", {**entry([0.5, 0.25], [1, 2]), "per_channel": False},
     "per-tensor but 2 scales"),
    ("layers.0.q.x", {"scale": [0.5]}, "missing fields"),
    ("layers.3.q.x", entry(0.5, 3), r"is not a site of layers\.0 \.\. 0"),
    ("encoder_proj.q.x", entry(0.5, 3), "is not a site of"),
    ("head.q.", entry(0.5, 3), "is not a site of"),
])
def test_bad_quant_state_entries_are_refused_naming_the_site(key, value, message):
    with pytest.raises(ValueError, match=message):
        read_sites({key: value}, "", 1)


def test_a_missing_site_is_an_error_when_the_exporter_needs_it():
    s = sites(x=entry(0.5, 3))
    assert "x" in s and "lin" not in s
    with pytest.raises(ValueError, match=r"no site 'layers\.0\.q\.lin'"):
        s["lin"]


def test_link_model_sites_live_under_the_encoder():
    layers = read_sites({"encoder.layers.1.q.out": entry(0.25, 0)}, "encoder.", 2)
    assert "out" in layers[1] and layers[0].sites == {}
    with pytest.raises(ValueError, match="not a site"):
        read_sites({"layers.1.q.out": entry(0.25, 0)}, "encoder.", 2)


def test_input_projection_and_head_sites_are_read_beside_the_layers():
    stack = read_sites({"encoder.layers.0.q.out": entry(0.25, 0),
                        "encoder.input_proj.q.x": entry(0.5, 3),
                        "encoder.head.q.out": entry(0.125, 1)}, "encoder.", 1)
    assert len(stack) == 1 and "out" in stack[0]
    assert stack.module("input_proj")["x"].key == "encoder.input_proj.q.x"
    assert "out" in stack.module("head") and stack.module("missing") is None
    assert read_sites({"layers.0.q.out": entry(0.25, 0)}, "", 1).module("head") is None
