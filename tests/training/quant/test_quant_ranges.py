import numpy as np
import pytest
import torch
from qgnn.training.quant.ranges import (
    CurrentRange,
    MinMaxRange,
    MomentumRange,
    PercentileRange,
    percentiles,
)


@pytest.mark.parametrize("n", [1, 2, 5, 100, 4097])
@pytest.mark.parametrize(("lower", "upper"), [(0.001, 0.999), (0.01, 0.99), (0.0, 1.0),
                                              (0.25, 0.75)])
def test_percentiles_match_numpy(n, lower, upper):
    values = np.random.default_rng(n).standard_normal(n).astype(np.float32)
    lo, hi = percentiles(torch.from_numpy(values), lower, upper)
    np.testing.assert_allclose([lo.item(), hi.item()],
                               np.percentile(values.astype(np.float64), [lower * 100, upper * 100]),
                               rtol=1e-5, atol=1e-6)


def test_percentile_tracker_first_step_then_momentum():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((100, 8)).astype(np.float32)
    b = 3 * rng.standard_normal((100, 8)).astype(np.float32)
    tracker = PercentileRange(0.01, 0.99, momentum=0.25)
    lo, hi = tracker(torch.from_numpy(a))
    pa = np.percentile(a, [1, 99])
    np.testing.assert_allclose([lo.item(), hi.item()], pa, rtol=1e-5)
    lo, hi = tracker(torch.from_numpy(b))
    pb = np.percentile(b, [1, 99])
    np.testing.assert_allclose([lo.item(), hi.item()], pa + 0.25 * (pb - pa), rtol=1e-5)


def test_percentile_tracker_subsamples_large_tensors_without_bias():
    torch.manual_seed(0)
    x = torch.randn(300_000)
    tracker = PercentileRange(0.001, 0.999, momentum=1.0, max_samples=2**14)
    lo, hi = tracker(x)
    true = np.percentile(x.numpy(), [0.1, 99.9])  # about -3.09 / 3.09
    assert abs(lo.item() - true[0]) < 0.25 and abs(hi.item() - true[1]) < 0.25


def test_rows_outside_the_mask_do_not_count():
    x = torch.randn(50, 4)
    x[::5] = 1000.0  # rows 0, 5, ... would blow up the range
    keep = torch.ones(50, dtype=torch.bool)
    keep[::5] = False
    for tracker in (MinMaxRange(), MomentumRange(0.5), PercentileRange(0.0, 1.0, 0.5),
                    PercentileRange(0.0, 1.0, 0.5, max_samples=16)):
        lo, hi = tracker(x, keep)
        assert hi.item() < 10.0, type(tracker).__name__
        assert hi.item() <= x[keep].max().item() and lo.item() >= x[keep].min().item()


def test_no_observable_rows_leaves_the_range_unset():
    tracker = MinMaxRange()
    assert tracker(torch.randn(3, 2), torch.zeros(3, dtype=torch.bool)) is None
    assert not tracker.initialised


def test_trackers_are_frozen_in_eval_mode():
    for tracker in (MinMaxRange(), MomentumRange(0.5), PercentileRange(0.01, 0.99, 0.5),
                    CurrentRange()):
        first = tracker(torch.randn(20, 3))
        stored = (first[0].clone(), first[1].clone())
        tracker.eval()
        lo, hi = tracker(100 * torch.randn(20, 3))
        assert lo.item() == stored[0].item() and hi.item() == stored[1].item()


def test_minmax_grows_momentum_averages_current_replaces():
    a, b = torch.tensor([-1.0, 2.0]), torch.tensor([-0.5, 4.0])
    mm, mom, cur = MinMaxRange(), MomentumRange(0.5), CurrentRange()
    for t in (mm, mom, cur):
        t(a)
    assert [v.item() for v in mm(b)] == [-1.0, 4.0]
    assert [v.item() for v in mom(b)] == [-0.75, 3.0]
    assert [v.item() for v in cur(b)] == [-0.5, 4.0]


def test_per_channel_current_range_is_per_row():
    w = torch.tensor([[1.0, -3.0, 2.0], [0.5, 0.25, -0.125]])
    lo, hi = CurrentRange(per_channel=True)(w)
    assert lo.tolist() == [-3.0, -0.125] and hi.tolist() == [2.0, 0.5]


def test_per_channel_ranges_fall_back_to_one_range_for_vectors_and_scalars():
    tracker = CurrentRange(per_channel=True)
    lo, hi = tracker(torch.tensor(0.5))
    assert lo.dim() == 0 and hi.item() == 0.5
    lo, hi = tracker(torch.tensor([1.0, -2.0, 3.0]))
    assert lo.dim() == 0 and (lo.item(), hi.item()) == (-2.0, 3.0)


def test_ranges_travel_with_the_state_dict():
    trained = CurrentRange(per_channel=True)
    trained(torch.randn(5, 3))
    fresh = CurrentRange(per_channel=True)
    fresh.load_state_dict(trained.state_dict())
    fresh.eval()
    lo, hi = fresh(torch.zeros(5, 3))
    assert torch.equal(lo, trained.lo) and torch.equal(hi, trained.hi)


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"lower": 0.6, "upper": 0.4, "momentum": 0.1}, "percentile"),
    ({"lower": 0.01, "upper": 0.99, "momentum": 0.0}, "momentum"),
    ({"lower": 0.01, "upper": 0.99, "momentum": 0.1, "max_samples": 0}, "max_samples")])
def test_bad_tracker_settings_are_refused(kwargs, field):
    with pytest.raises(ValueError, match=field):
        PercentileRange(**kwargs)
