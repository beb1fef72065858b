"""Shared pieces of the ai.qgnn op tests: random neighbour structures with the awkward cases,
one-op models, and onnxruntime sessions at 1 and 2 intra-op threads."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx.reference import ReferenceEvaluator
from qgnn.exporter.ops import make_op_model, reference_ops


@dataclass(frozen=True)
class Structure:
    """Destination-sorted edges as CSR (indptr, src), plus the same edges as a padded grid."""

    name: str
    num_src: int
    indptr: np.ndarray
    src: np.ndarray

    @property
    def num_dst(self) -> int:
        return self.indptr.size - 1

    @property
    def num_edges(self) -> int:
        return self.src.size

    def padded(self, rng: np.random.Generator, extra: int = 1) -> np.ndarray:
        """(D, K) neighbour grid, K = max degree + ``extra``, -1 at shuffled positions."""
        deg = np.diff(self.indptr)
        k = int(deg.max(initial=0)) + extra
        grid = np.full((self.num_dst, k), -1, dtype=np.int64)
        for v in range(self.num_dst):  # tiny test graphs only
            slots = np.sort(rng.choice(k, size=deg[v], replace=False))
            grid[v, slots] = self.src[self.indptr[v]:self.indptr[v + 1]]
        return grid


def _csr(name: str, num_src: int, degrees: np.ndarray, src: np.ndarray) -> Structure:
    indptr = np.concatenate([[0], np.cumsum(degrees)]).astype(np.int64)
    return Structure(name, num_src, indptr, np.asarray(src, dtype=np.int64))


def make_structures(seed: int = 0) -> list[Structure]:
    """Random graphs covering: destinations without edges, sources without out-edges (isolated
    nodes), repeated edges, a hub with many in-edges, no edges at all, no destinations, and a
    bipartite block with more sources than destinations.
    """
    rng = np.random.default_rng(seed)
    n = 40
    degrees = rng.choice([0, 0, 1, 2, 3, 6], size=n)
    degrees[7] = 250  # hub
    degrees[3] = 3
    src = rng.integers(0, n // 2, size=int(degrees.sum()))  # sources >= n/2 are isolated
    first = int(degrees[:3].sum())
    src[first:first + 3] = 5  # edge (5 -> 3) three times
    bipartite = rng.integers(0, 5, size=12)
    return [
        _csr("mixed", n, degrees, src),
        _csr("no_edges", 6, np.zeros(6, np.int64), np.zeros(0)),
        _csr("no_dst", 3, np.zeros(0, np.int64), np.zeros(0)),
        _csr("bipartite", 50, bipartite, rng.integers(0, 50, size=int(bipartite.sum()))),
    ]


STRUCTURES = make_structures()
FEATURES = (1, 7, 64)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``structure`` and ``features`` arguments run over every test structure / feature width."""
    if "structure" in metafunc.fixturenames:
        metafunc.parametrize("structure", STRUCTURES, ids=[s.name for s in STRUCTURES])
    if "features" in metafunc.fixturenames:
        metafunc.parametrize("features", FEATURES, ids=[f"F{f}" for f in FEATURES])


def dtype_of(array: np.ndarray) -> int:
    return onnx.helper.np_dtype_to_tensor_dtype(array.dtype)


class OpRunner:
    """One-op models, built and loaded once per (op, attributes, inputs present), run by stock
    onnxruntime at 1 and 2 intra-op threads (asserting bit-identical outputs) and by the numpy
    reference through onnx.reference.ReferenceEvaluator.
    """

    def __init__(self) -> None:
        self._cache: dict[tuple, tuple[onnx.ModelProto, list[ort.InferenceSession]]] = {}

    def model(self, op: str, feeds: dict[str, np.ndarray], **attributes: object) -> onnx.ModelProto:
        return self._entry(op, feeds, attributes)[0]

    def _entry(self, op: str, feeds: dict[str, np.ndarray], attributes: dict[str, object]):
        key = (op, tuple(sorted((k, v.dtype.str, v.ndim) for k, v in feeds.items())),
               tuple(sorted(attributes.items())))
        if key not in self._cache:
            types = {k: (dtype_of(v), [f"{k}_{i}" for i in range(v.ndim)])
                     for k, v in feeds.items()}
            model = make_op_model(op, types, **attributes)
            sessions = []
            for threads in (1, 2):
                opts = ort.SessionOptions()
                opts.intra_op_num_threads = threads
                sessions.append(ort.InferenceSession(model.SerializeToString(), opts,
                                                     providers=["CPUExecutionProvider"]))
            self._cache[key] = (model, sessions)
        return self._cache[key]

    def ort(self, op: str, feeds: dict[str, np.ndarray], **attributes: object) -> np.ndarray:
        """The function body's output on onnxruntime; identical at 1 and 2 threads."""
        _, sessions = self._entry(op, feeds, attributes)
        one, two = (s.run(None, feeds)[0] for s in sessions)
        assert one.dtype == two.dtype and one.shape == two.shape
        np.testing.assert_array_equal(one.view(np.uint8), two.view(np.uint8))
        return one

    def reference(self, op: str, feeds: dict[str, np.ndarray], **attributes: object) -> np.ndarray:
        model, _ = self._entry(op, feeds, attributes)
        return ReferenceEvaluator(model, new_ops=reference_ops()).run(None, feeds)[0]


@pytest.fixture
def mixed_structure() -> Structure:
    """The structure with every awkward case at once (hub, repeats, empty and isolated)."""
    return STRUCTURES[0]


@pytest.fixture(scope="session")
def op_runner() -> OpRunner:
    return OpRunner()


def assert_float_close(got: np.ndarray, want: np.ndarray, magnitude: np.ndarray) -> None:
    """Within 1e-5 relative, relative to the size of the summed terms where sums cancel."""
    assert got.dtype == np.float32 and got.shape == want.shape
    tol = 1e-5 * (np.abs(want) + magnitude) + 1e-30
    bad = np.abs(got.astype(np.float64) - want) > tol
    assert not bad.any(), f"{bad.sum()} mismatches, first at {np.argwhere(bad)[0]}"


@pytest.fixture
def float_close() -> Callable[[np.ndarray, np.ndarray, np.ndarray], None]:
    return assert_float_close
