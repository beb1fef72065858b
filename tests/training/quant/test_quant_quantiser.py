import numpy as np
import pytest
import torch
from qgnn.training.quant.quantiser import (
    dequantize,
    fake_quantize,
    qrange,
    quant_params,
    quantize,
)


def np_fake_quant(x, scale, zp, qmin, qmax):
    """Independent numpy oracle of the contract's quantise-dequantise."""
    q = np.clip(np.rint(x.astype(np.float32) / np.float32(scale)) + zp, qmin, qmax)
    return ((q - zp) * np.float32(scale)).astype(np.float32)


@pytest.mark.parametrize(("bits", "signed", "expected"), [
    (8, False, (0, 255)), (8, True, (-127, 127)), (4, False, (0, 15)), (4, True, (-7, 7)),
    (2, True, (-1, 1)), (3, False, (0, 7))])
def test_qrange_follows_contract(bits, signed, expected):
    assert qrange(bits, signed) == expected


@pytest.mark.parametrize("bits", [1, 9, 0, True, 8.0])
def test_bits_outside_2_to_8_are_refused(bits):
    with pytest.raises(ValueError, match="bits"):
        qrange(bits, False)


def test_unsigned_params_by_hand():
    scale, zp = quant_params(torch.tensor(-1.0), torch.tensor(3.0), 8, signed=False)
    assert scale.dtype == torch.float32 and zp.dtype == torch.int64
    assert scale.item() == pytest.approx(4 / 255)
    assert zp.item() == 64  # round(1 / (4/255)) = round(63.75)


def test_signed_params_are_symmetric():
    scale, zp = quant_params(torch.tensor(-2.0), torch.tensor(1.0), 8, signed=True)
    assert scale.item() == pytest.approx(2 / 127) and zp.item() == 0
    scale4, _ = quant_params(torch.tensor(-0.5), torch.tensor(3.5), 4, signed=True)
    assert scale4.item() == pytest.approx(0.5)


def test_range_is_widened_to_contain_zero_and_empty_range_gets_unit_scale():
    scale, zp = quant_params(torch.tensor(1.0), torch.tensor(2.0), 8, signed=False)
    assert zp.item() == 0 and scale.item() == pytest.approx(2 / 255)
    scale, zp = quant_params(torch.tensor(-3.0), torch.tensor(-1.0), 8, signed=False)
    assert zp.item() == 255 and scale.item() == pytest.approx(3 / 255)
    scale, zp = quant_params(torch.tensor(0.0), torch.tensor(0.0), 8, signed=False)
    assert scale.item() == 1.0 and zp.item() == 0


def test_per_channel_params():
    lo, hi = torch.tensor([-1.0, -4.0, 0.0]), torch.tensor([2.0, 1.0, 0.5])
    scale, zp = quant_params(lo, hi, 8, signed=True)
    np.testing.assert_allclose(scale.numpy(), [2 / 127, 4 / 127, 0.5 / 127], rtol=1e-6)
    assert zp.tolist() == [0, 0, 0]


def test_quantize_rounds_half_to_even_and_saturates():
    x = torch.tensor([0.5, 1.5, 2.5, -0.5, -1.5, 300.0, -300.0])
    q = quantize(x, torch.tensor(1.0), torch.tensor(0), -127, 127)
    assert q.dtype == torch.int32
    assert q.tolist() == [0, 2, 2, 0, -2, 127, -127]
    q = quantize(torch.tensor([-1.0, 0.0, 1.0]), torch.tensor(0.5), torch.tensor(10), 0, 255)
    assert q.tolist() == [8, 10, 12]
    assert dequantize(q, torch.tensor(0.5), torch.tensor(10)).tolist() == [-1.0, 0.0, 1.0]


@pytest.mark.parametrize(("bits", "signed"), [(8, False), (8, True), (4, False), (2, True)])
def test_fake_quantize_matches_numpy_oracle(bits, signed):
    rng = np.random.default_rng(bits)
    x = rng.normal(0.2, 2.0, size=(50, 7)).astype(np.float32)
    scale, zp = quant_params(torch.tensor(-2.5), torch.tensor(3.0), bits, signed)
    qmin, qmax = qrange(bits, signed)
    out = fake_quantize(torch.from_numpy(x), scale, zp, qmin, qmax)
    expected = np_fake_quant(x, scale.item(), zp.item(), qmin, qmax)
    np.testing.assert_array_equal(out.numpy(), expected)
    grid = out.numpy() / scale.item() + zp.item()
    np.testing.assert_allclose(grid, np.rint(grid), atol=1e-3)


def test_fake_quantize_error_is_at_most_half_a_step_inside_the_range_and_zero_is_exact():
    x = torch.linspace(-1.0, 3.0, 1001)
    scale, zp = quant_params(torch.tensor(-1.0), torch.tensor(3.0), 8, signed=False)
    out = fake_quantize(x, scale, zp, 0, 255)
    assert (out - x).abs().max().item() <= scale.item() / 2 + 1e-6
    assert fake_quantize(torch.zeros(3), scale, zp, 0, 255).tolist() == [0.0, 0.0, 0.0]


def test_plain_ste_passes_gradient_everywhere():
    x = torch.tensor([-5.0, -0.3, 0.0, 0.7, 5.0], requires_grad=True)
    out = fake_quantize(x, torch.tensor(0.1), torch.tensor(0), -7, 7, ste="plain")
    (out * torch.arange(1.0, 6.0)).sum().backward()
    assert x.grad.tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]


def test_clipped_ste_zeroes_gradient_outside_the_range():
    # scale 0.1, [-7, 7] covers [-0.7, 0.7]; -5 and 5 saturate, 0.7 is exactly on the edge.
    x = torch.tensor([-5.0, -0.3, 0.0, 0.7, 5.0], requires_grad=True)
    out = fake_quantize(x, torch.tensor(0.1), torch.tensor(0), -7, 7, ste="clipped")
    (out * torch.arange(1.0, 6.0)).sum().backward()
    assert x.grad.tolist() == [0.0, 2.0, 3.0, 4.0, 0.0]


def test_per_channel_fake_quantize_uses_each_rows_scale():
    w = torch.tensor([[0.26, -0.5], [2.6, -5.0]])
    scale = torch.tensor([0.5 / 127, 5.0 / 127]).view(-1, 1)
    out = fake_quantize(w, scale, torch.zeros(2, 1, dtype=torch.int64), -127, 127)
    np.testing.assert_allclose((out / scale).numpy(), np.rint((w / scale).numpy()), atol=1e-4)
    assert out[0, 1].item() == pytest.approx(-0.5) and out[1, 1].item() == pytest.approx(-5.0)


def test_bad_ste_or_range_is_refused():
    with pytest.raises(ValueError, match="ste"):
        fake_quantize(torch.ones(2), torch.tensor(1.0), torch.tensor(0), 0, 255, ste="soft")
    with pytest.raises(ValueError, match="qmin"):
        fake_quantize(torch.ones(2), torch.tensor(1.0), torch.tensor(0), 5, 5)
