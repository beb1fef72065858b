"""ISA levels: which exist, forcing one through $QGNN_ISA or ``isa=``, the errors for a level the
host cannot run, and bit-identical outputs at every level on inputs that reach the extremes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from qgnn.runtime import kernels
from qgnn.runtime.kernels import _ext

LEVELS = [lvl for lvl in kernels.levels_supported() if lvl in kernels.levels_built()]


@pytest.fixture(autouse=True)
def isa(monkeypatch: pytest.MonkeyPatch) -> None:
    """Overrides the per-level fixture: these tests compare or force the levels themselves."""
    monkeypatch.delenv("QGNN_ISA", raising=False)


def _in_child(env_isa: str | None) -> subprocess.CompletedProcess:
    """default_level() and build_info()["isa"] in a fresh interpreter with $QGNN_ISA set."""
    env = {k: v for k, v in os.environ.items() if k != "QGNN_ISA"}
    if env_isa is not None:
        env["QGNN_ISA"] = env_isa
    code = ("import json; from qgnn.runtime import kernels; "
            "print(json.dumps([kernels.default_level(), kernels.build_info()['isa']]))")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=60)


def test_levels_are_ordered_and_baseline_is_always_there():
    assert kernels.levels_supported()[0] == "baseline"
    assert kernels.levels_built()[0] == "baseline"
    assert list(kernels.levels_supported()) == [
        lvl for lvl in _ext.LEVELS if lvl in kernels.levels_supported()]
    if _ext.ARCH == "x86_64":
        assert _ext.LEVELS == ("baseline", "avx2", "avx512", "avx512_vnni")


def test_without_qgnn_isa_the_best_usable_level_is_picked():
    assert kernels.default_level() == LEVELS[-1]
    assert kernels.build_info()["isa"] == LEVELS[-1]


@pytest.mark.parametrize("level", LEVELS)
def test_qgnn_isa_forces_the_level_in_a_fresh_process(level):
    out = _in_child(level)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [level, level]


def test_an_unknown_level_is_refused_listing_the_valid_names():
    out = _in_child("avx9000")
    assert out.returncode != 0
    assert "QGNN_ISA: unknown ISA level 'avx9000'; valid on" in out.stderr
    assert "baseline" in out.stderr.rsplit("valid on", 1)[1]
    with pytest.raises(ValueError, match=r"isa: unknown ISA level 'sse9'.*baseline"):
        kernels.qlinear(np.zeros((1, 1), np.uint8), 0, np.zeros((1, 1), np.int8), None, 1.0, 0,
                        isa="sse9")


def test_a_level_the_cpu_lacks_is_refused_naming_what_it_has(monkeypatch):
    monkeypatch.setattr(_ext, "levels_supported", lambda: ("baseline",))
    higher = [lvl for lvl in _ext.LEVELS if lvl != "baseline"]
    if not higher:
        pytest.skip("this architecture has only the baseline level")
    with pytest.raises(ValueError, match=rf"ISA level '{higher[-1]}' is not supported by this "
                                         r"CPU, which has baseline$"):
        kernels.resolve_level(higher[-1], "QGNN_ISA")
    monkeypatch.setenv("QGNN_ISA", higher[0])
    with pytest.raises(ValueError, match="QGNN_ISA: ISA level"):
        kernels.quantize_u8(np.zeros(3, np.float32), 1.0, 0)


def test_a_level_that_was_not_built_is_reported_missing(monkeypatch):
    """One level failing to compile leaves the others usable; asking for it says what exists."""
    higher = [lvl for lvl in kernels.levels_supported() if lvl != "baseline"]
    if not higher:
        pytest.skip("this CPU supports only the baseline level")
    monkeypatch.setattr(_ext, "levels_built", lambda: ("baseline",))
    with pytest.raises(kernels.KernelsUnavailableError,
                       match=rf"ISA level '{higher[-1]}' was not built \(built: baseline\)"):
        kernels.resolve_level(higher[-1])
    assert kernels.default_level() == "baseline"


def test_a_level_the_cpu_lacks_really_fails_in_a_child():
    lacking = [lvl for lvl in _ext.LEVELS if lvl not in kernels.levels_supported()]
    if not lacking:
        pytest.skip("this CPU has every level of its architecture")
    out = _in_child(lacking[0])
    assert out.returncode != 0 and "is not supported by this CPU, which has" in out.stderr


def test_each_level_is_its_own_module_and_they_coexist():
    mods = {lvl: _ext.ext(lvl) for lvl in LEVELS}
    assert len({id(m) for m in mods.values()}) == len(LEVELS)
    for lvl, mod in mods.items():
        assert mod.build_info()["isa"] == lvl
        assert kernels.build_info(lvl)["isa"] == lvl


# -- bit-identical outputs across levels ---------------------------------------------------------

def _same_at_every_level(call) -> None:
    """``call(isa)`` gives one output (or tuple of outputs); all levels must agree exactly."""
    results = {lvl: call(lvl) for lvl in LEVELS}
    first = results[LEVELS[0]]
    for lvl, got in results.items():
        for a, b in zip(first if isinstance(first, tuple) else (first,),
                        got if isinstance(got, tuple) else (got,), strict=True):
            assert a.dtype == b.dtype
            np.testing.assert_array_equal(a, b, err_msg=f"{lvl} differs from {LEVELS[0]}")


def _u8_with_extremes(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    x = rng.integers(0, 256, shape, dtype=np.uint8)
    x.flat[:: 7] = 255
    x.flat[3:: 11] = 0
    return x


def _s8_with_extremes(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    w = rng.integers(-127, 128, shape, dtype=np.int8)
    w.flat[:: 5] = 127
    w.flat[2:: 5] = -127
    return w


@pytest.mark.parametrize(("n", "k", "m"), [(37, 64, 64), (129, 128, 128), (9, 1000, 33),
                                           (5, 3, 130), (64, 4100, 17)])
def test_qlinear_is_bit_identical_at_every_level(n, k, m):
    rng = np.random.default_rng(k * m)
    x = _u8_with_extremes(rng, (n, k))
    w = _s8_with_extremes(rng, (k, m))
    x[0] = 255
    w[:, 0] = 127
    w[:, 1 % m] = -127
    bias = rng.integers(-2**31, 2**31, m, dtype=np.int64).astype(np.int32)
    mult = rng.uniform(1e-7, 1e-3, m).astype(np.float32)
    for x_zp, y_zp, b in ((0, 0, None), (255, 128, bias), (71, 255, bias)):
        _same_at_every_level(lambda lvl, x_zp=x_zp, y_zp=y_zp, b=b: kernels.qlinear(
            x, x_zp, w, b, mult, y_zp, isa=lvl))


@pytest.mark.parametrize("reduce", ["sum", "mean", "max"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("feats", [1, 16, 64, 100])
def test_qaggregate_is_bit_identical_at_every_level(make_csr, reduce, weighted, feats):
    rng = np.random.default_rng(feats)
    indptr, src, _ = make_csr(200, 3000, 150, 0.1)
    x = _u8_with_extremes(rng, (150, feats))
    w = _u8_with_extremes(rng, (src.size,)) if weighted else None
    for x_zp, w_zp, mult in ((0, 0, 1e-3), (255, 255, 0.37), (128, 3, 1e-6)):
        _same_at_every_level(lambda lvl, x_zp=x_zp, w_zp=w_zp, mult=mult: kernels.qaggregate(
            x, x_zp, indptr, src, mult, 17, reduce, w, w_zp, isa=lvl))


@pytest.mark.parametrize("dim", [1, 7, 64, 100, 300])
@pytest.mark.parametrize("qtype", [np.int8, np.int32])
def test_topk_is_bit_identical_at_every_level(dim, qtype):
    rng = np.random.default_rng(dim)
    table = _s8_with_extremes(rng, (3000, dim))
    table[10] = 127
    table[11] = -127
    q = rng.integers(-127, 128, dim).astype(qtype)
    q[0] = 127
    exclude = np.array([5, 11, 2000])
    _same_at_every_level(lambda lvl: kernels.int8_topk(q, table, 50, exclude, isa=lvl))
    cand = rng.choice(3000, 700, replace=False)
    _same_at_every_level(lambda lvl: kernels.int8_topk(q, table, 20, None, cand, isa=lvl))


def test_quantisers_are_bit_identical_at_every_level():
    rng = np.random.default_rng(5)
    x = (rng.standard_normal(100_003) * 300).astype(np.float32)
    x[:8] = [0.5, 1.5, 2.5, -0.5, -1.5, 1e30, -1e30, np.float32(127.5)]
    for scale, zp, bits in ((1.0, 128, 8), (0.37, 0, 4), (2.0, 255, 8)):
        _same_at_every_level(lambda lvl, scale=scale, zp=zp, bits=bits: kernels.quantize_u8(
            x, scale, zp, bits=bits, isa=lvl))
        _same_at_every_level(lambda lvl, scale=scale: kernels.quantize_s8(x, scale, isa=lvl))
    q = _u8_with_extremes(rng, (999,))
    _same_at_every_level(lambda lvl: kernels.dequantize_u8(q, 0.1, 3, isa=lvl))
