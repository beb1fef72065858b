"""kernel_ab loads one level's build from a folder beside the installed one, with the same
answers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from qgnn.bench import kernel_ab
from qgnn.runtime import kernels
from qgnn.runtime.kernels import dense

needs_kernels = pytest.mark.skipif(not kernels.available(), reason="compiled kernels not built")
BUILD_DIR = Path(dense.__file__).parent


@needs_kernels
def test_a_loaded_build_gives_the_installed_answers() -> None:
    module = kernel_ab.load_build(BUILD_DIR, "baseline")
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (7, 5), dtype=np.uint8)
    w = rng.integers(-127, 128, (5, 9), dtype=np.int8)
    call = lambda: dense.qlinear(x, 2, w, None, 0.01, 3, isa="baseline")  # noqa: E731
    assert np.array_equal(kernel_ab._with(module, call)(), call())


def test_a_folder_without_the_build_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        kernel_ab.load_build(tmp_path, "baseline")


@needs_kernels
def test_only_times_the_named_calls(tmp_path: Path) -> None:
    assert kernel_ab.main(["--before", str(BUILD_DIR), "--after", str(BUILD_DIR),
                           "--repeat", "1", "--threads", "1", "--only", "lut_u8",
                           "--results-dir", str(tmp_path), "--name", "ab"]) == 0
    record = json.loads((tmp_path / "ab.json").read_text())["results"]["kernels"]
    assert [k["kernel"] for k in record] == ["lut_u8 per column 100k x 128"]
    assert record[0]["identical_outputs"]
