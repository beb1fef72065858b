"""Synthetic graphs for tests and benchmarks that scale to 10M nodes / 100M edges (numpy only).

``powerlaw_communities`` is a degree-corrected planted partition (Karrer & Newman 2011, Phys. Rev.
E 83, 016107) with Chung–Lu style edge sampling (endpoint chosen with probability proportional to a
power-law activity weight); labels are the communities and features are noisy class centroids, so
both the structure and the features carry the label. ``bipartite_recommender`` draws user-item
interactions from a softmax over latent dot products plus a Zipf popularity bias, without
repetition, via the Gumbel top-k trick (Kool et al. 2019, ICML, "Stochastic Beams and Where to Find
Them"), with timestamps and a time-ordered split.

Memory: edges are generated in chunks straight into one preallocated int64 key buffer
``src * N + dst`` (both directions), sorted and deduplicated in place, and that buffer becomes the
CSR ``indices`` (``key % N`` in place), so the edge stage never holds more than ~1.5 edge arrays.
Weighted draws are always made in sorted order (sorted uniforms from exponential spacings), which
keeps the binary searches cache-friendly; random searches cost ~2 µs each at 10M nodes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from qgnn.graph.container import Graph
from qgnn.graph.links import LinkData

DEFAULT_CHUNK = 1 << 21  # pairs (or feature values) generated per step: ~150 MB of temporaries
MAX_TOPUP_ROUNDS = 20  # rounds that replace removed self-loops / duplicates by fresh pairs


def _check_int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ValueError(f"{name}: expected an int >= {low}, got {value!r}")
    return int(value)


def _check_real(name: str, value: Any, low: float, high: float, *, low_open: bool = False,
                high_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValueError(f"{name}: expected a number, got {value!r}")
    v = float(value)
    too_low = v <= low if low_open else v < low
    too_high = v >= high if high_open else v > high
    if not np.isfinite(v) or too_low or too_high:
        lb, hb = "(" if low_open else "[", ")" if high_open else "]"
        raise ValueError(f"{name}: expected a value in {lb}{low}, {high}{hb}, got {value!r}")
    return v


def _sorted_uniform(count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` sorted uniforms in (0, 1) in O(count): normalised exponential spacings."""
    e = np.cumsum(rng.standard_exponential(count + 1))
    return e[:-1] / e[-1]


@dataclass(frozen=True)
class _Communities:
    """Nodes grouped by community with the cumulative activity needed for weighted draws."""

    members: np.ndarray  # (N,) node ids, community 0's first
    bounds: np.ndarray  # (K + 1,) community c is members[bounds[c]:bounds[c + 1]]
    cum: np.ndarray  # (N,) float64 cumulative activity along ``members``
    weight: np.ndarray  # (K,) total activity per community
    start: np.ndarray  # (K,) activity before each community along ``members``

    def draw(self, c: int, count: int, rng: np.random.Generator) -> np.ndarray:
        """``count`` node ids of community ``c`` drawn with probability ∝ activity, sorted by
        position (the searches stay sequential)."""
        lo, hi = int(self.bounds[c]), int(self.bounds[c + 1])
        target = self.start[c] + _sorted_uniform(count, rng) * self.weight[c]
        pos = np.searchsorted(self.cum, target, side="right")
        return self.members[np.clip(pos, lo, hi - 1)]


def _communities(labels: np.ndarray, activity: np.ndarray, k: int) -> _Communities:
    members = np.argsort(labels, kind="stable")
    bounds = np.zeros(k + 1, np.int64)
    np.cumsum(np.bincount(labels, minlength=k), out=bounds[1:])
    cum = np.cumsum(activity[members])
    ends = cum[bounds[1:] - 1]
    weight = np.diff(np.concatenate([[0.0], ends]))
    return _Communities(members, bounds, cum, weight, ends - weight)


def _draw_pairs(count: int, comm: _Communities, homophily: float,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``count`` endpoint pairs: ``a`` ∝ activity; ``b`` ∝ activity inside ``a``'s community with
    probability ``homophily``, else ∝ activity over the other communities.

    Both endpoint lists are drawn community by community in sorted order; the ``b`` draws of a
    community are dealt to its pairs through a random permutation, so ``a`` and ``b`` stay
    independent given the communities.
    """
    k = comm.weight.size
    total = float(comm.cum[-1])
    n_a = rng.multinomial(count, comm.weight / total)
    a = np.concatenate([comm.draw(c, int(n_a[c]), rng) for c in range(k)])
    ctype = np.int16 if k < 2**15 else np.int64  # int16 keys get numpy's O(n) radix sort
    c_a = np.repeat(np.arange(k, dtype=ctype), n_a)
    c_b = c_a.copy()
    if k > 1:
        inter = np.flatnonzero(rng.random(count) >= homophily)
        ca = c_a[inter].astype(np.int64)
        t = rng.random(inter.size) * (total - comm.weight[ca])
        t += (t >= comm.start[ca]) * comm.weight[ca]  # skip a's own community
        c_b[inter] = np.minimum(np.searchsorted(comm.start + comm.weight, t, side="right"), k - 1)
    shuffled = rng.permutation(count)
    slot = shuffled[np.argsort(c_b[shuffled], kind="stable")]
    n_b = np.bincount(c_b, minlength=k)
    b = np.empty(count, np.int64)
    b[slot] = np.concatenate([comm.draw(c, int(n_b[c]), rng) for c in range(k)])
    return a, b


def _append_keys(buf: np.ndarray, filled: int, a: np.ndarray, b: np.ndarray, n: int) -> int:
    """Write keys of (a, b) and (b, a), self-loops dropped, at ``buf[filled:]``."""
    keep = a != b
    a, b = a[keep], b[keep]
    m = a.size
    np.multiply(a, n, out=buf[filled:filled + m])
    buf[filled:filled + m] += b
    np.multiply(b, n, out=buf[filled + m:filled + 2 * m])
    buf[filled + m:filled + 2 * m] += a
    return filled + 2 * m


def _dedupe_sorted(buf: np.ndarray, filled: int, chunk: int) -> int:
    """Drop repeated keys of the sorted ``buf[:filled]`` in place; returns the new length."""
    write, prev = 0, None
    for s in range(0, filled, chunk):
        c = buf[s:min(filled, s + chunk)]
        keep = np.empty(c.size, np.bool_)
        np.not_equal(c[1:], c[:-1], out=keep[1:])
        keep[0] = prev is None or c[0] != prev
        prev = int(c[-1])
        kept = c[keep]
        buf[write:write + kept.size] = kept
        write += kept.size
    return write


def _symmetric_keys(num_pairs: int, n: int, comm: _Communities, homophily: float,
                    rng: np.random.Generator, chunk: int) -> np.ndarray:
    """Sorted distinct directed keys ``u * n + v`` of ``num_pairs`` undirected pairs (both
    directions, no self-loops). Removed loops/duplicates are replaced by fresh pairs for up to
    ``MAX_TOPUP_ROUNDS`` rounds; only graphs close to complete end up short."""
    buf = np.empty(2 * num_pairs, np.int64)
    filled = 0
    for s in range(0, num_pairs, chunk):
        a, b = _draw_pairs(min(chunk, num_pairs - s), comm, homophily, rng)
        filled = _append_keys(buf, filled, a, b, n)
    buf[:filled].sort()
    filled = _dedupe_sorted(buf, filled, chunk)
    for _ in range(MAX_TOPUP_ROUNDS):
        missing = num_pairs - filled // 2
        if missing == 0:
            break
        a, b = _draw_pairs(missing, comm, homophily, rng)
        new = np.empty(2 * missing, np.int64)
        new = np.unique(new[:_append_keys(new, 0, a, b, n)])
        pos = np.minimum(np.searchsorted(buf[:filled], new), max(filled - 1, 0))
        if filled:
            new = new[buf[pos] != new]
        buf[filled:filled + new.size] = new
        filled += new.size
        buf[:filled].sort(kind="stable")  # timsort: one merge of two sorted runs
    return buf[:filled]


def _csr_from_keys(keys: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """CSR (indptr, indices) from sorted keys ``src * n + dst``; ``keys`` becomes ``indices``."""
    indptr = np.searchsorted(keys, np.arange(n + 1, dtype=np.int64) * n).astype(np.int64)
    np.remainder(keys, n, out=keys)
    return indptr, keys


def _split_masks(n: int, train_fraction: float, val_fraction: float,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    order = rng.permutation(n)
    n_train = round(train_fraction * n)
    n_val = round(val_fraction * n)
    masks = []
    for lo, hi in ((0, n_train), (n_train, n_train + n_val), (n_train + n_val, n)):
        m = np.zeros(n, np.bool_)
        m[order[lo:hi]] = True
        masks.append(m)
    return masks[0], masks[1], masks[2]


def _centroid_features(labels: np.ndarray, k: int, num_features: int, noise: float,
                       rng: np.random.Generator, chunk: int) -> np.ndarray:
    """(N, F) float32: unit-norm random class centroid + N(0, noise²) per coordinate, written in
    row chunks into one preallocated array."""
    centroids = rng.standard_normal((k, num_features))
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    centroids = centroids.astype(np.float32)
    x = np.empty((labels.size, num_features), np.float32)
    rows = max(1, chunk // max(num_features, 1))
    for s in range(0, labels.size, rows):
        block = x[s:s + rows]
        rng.standard_normal(out=block, dtype=np.float32)
        block *= np.float32(noise)
        block += centroids[labels[s:s + rows]]
    return x


def powerlaw_communities(num_nodes: int, *, avg_degree: float = 10.0, num_communities: int = 8,
                         num_features: int = 128, homophily: float = 0.8, power: float = 2.5,
                         feature_noise: float = 1.0, train_fraction: float = 0.6,
                         val_fraction: float = 0.2, seed: int = 0,
                         chunk_size: int = DEFAULT_CHUNK) -> Graph:
    """A degree-corrected planted-partition node-classification graph.

    Node ``i`` gets activity ``θ_i ~ Pareto(power - 1)`` (so expected degrees have the tail
    ``P(k) ~ k^-power``), capped at the natural cutoff ``N^(1/(power-1))``. Communities are
    balanced (sizes differ by at most 1) and randomly placed; ``y`` is the community. Each of the
    ``round(N * avg_degree / 2)`` undirected pairs picks ``a ∝ θ`` and, with probability
    ``homophily``, ``b ∝ θ`` within ``a``'s community, otherwise ``b ∝ θ`` over the other
    communities, so the edge homophily is ``homophily`` before deduplication. Both directions are
    stored; self-loops and repeated pairs are removed and redrawn, so the edge count is exact
    unless the graph is close to complete (``meta["num_pairs"]`` holds what was reached).

    Features: unit-norm random centroid of the node's community plus ``N(0, feature_noise²)`` per
    coordinate, float32 — informative but noisy, so neighbour aggregation helps. Masks are a
    random ``train/val/test`` partition. Structure, features and masks use independent streams
    spawned from ``seed``; the result is deterministic given ``(seed, chunk_size)``, and the
    structure does not depend on ``num_features`` or ``feature_noise``.
    """
    n = _check_int("powerlaw_communities.num_nodes", num_nodes, 2)
    k = _check_int("powerlaw_communities.num_communities", num_communities, 1)
    if k > n:
        raise ValueError(f"powerlaw_communities.num_communities: {k} exceeds num_nodes={n}")
    avg_degree = _check_real("powerlaw_communities.avg_degree", avg_degree, 0.0, n - 1,
                             low_open=True)
    f = _check_int("powerlaw_communities.num_features", num_features, 1)
    homophily = _check_real("powerlaw_communities.homophily", homophily, 0.0, 1.0)
    power = _check_real("powerlaw_communities.power", power, 2.0, np.inf, low_open=True,
                        high_open=True)
    noise = _check_real("powerlaw_communities.feature_noise", feature_noise, 0.0, np.inf,
                        high_open=True)
    train_fraction = _check_real("powerlaw_communities.train_fraction", train_fraction, 0.0, 1.0)
    val_fraction = _check_real("powerlaw_communities.val_fraction", val_fraction, 0.0, 1.0)
    if train_fraction + val_fraction > 1.0:
        raise ValueError(f"powerlaw_communities: train_fraction + val_fraction = "
                         f"{train_fraction + val_fraction} exceeds 1")
    chunk = _check_int("powerlaw_communities.chunk_size", chunk_size, 1)
    seed = _check_int("powerlaw_communities.seed", seed, 0)
    r_struct, r_feat, r_mask = (np.random.default_rng(s)
                                for s in np.random.SeedSequence(seed).spawn(3))

    alpha = power - 1.0
    activity = np.minimum(r_struct.pareto(alpha, n) + 1.0, n ** (1.0 / alpha))
    labels = np.empty(n, np.int64)
    labels[r_struct.permutation(n)] = np.arange(n, dtype=np.int64) % k
    comm = _communities(labels, activity, k)
    del activity
    num_pairs = round(n * avg_degree / 2)
    keys = _symmetric_keys(num_pairs, n, comm, homophily, r_struct, chunk)
    del comm
    indptr, indices = _csr_from_keys(keys, n)
    x = _centroid_features(labels, k, f, noise, r_feat, chunk)
    train, val, test = _split_masks(n, train_fraction, val_fraction, r_mask)
    meta = {"generator": "powerlaw_communities", "seed": seed, "avg_degree": avg_degree,
            "num_communities": k, "homophily": homophily, "power": power,
            "feature_noise": noise, "num_pairs_target": num_pairs,
            "num_pairs": int(indices.size // 2)}
    return Graph(num_nodes=n, indptr=indptr, indices=indices, x=x, y=labels, train_mask=train,
                 val_mask=val, test_mask=test, name="powerlaw_communities", meta=meta)


def _gumbel_topk(scores: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """(B, k) column indices: per row, ``k`` draws without replacement from softmax(scores), in
    draw order (perturb with Gumbel noise, keep the top ``k``, sort descending)."""
    # float32 exponentials are exactly 0 with probability ~1e-7; the 2**-26 floor only clips the
    # Gumbel tail beyond 18 (probability 1.5e-8) instead of producing an infinite score.
    noise = rng.standard_exponential(scores.shape, dtype=np.float32)
    noise += np.float32(2.0**-26)
    scores -= np.log(noise)
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1)


def _latent_features(latent: np.ndarray, num_features: int, noise: float,
                     rng: np.random.Generator) -> np.ndarray:
    """Project unit-variance latents with an orthonormal (dim, F) map (inner products kept when
    F >= dim) and add N(0, noise²) per coordinate; float32."""
    dim = latent.shape[1]
    q, _ = np.linalg.qr(rng.standard_normal((max(dim, num_features), min(dim, num_features))))
    proj = q.T if num_features >= dim else q
    x = (latent @ proj).astype(np.float32)
    x += np.float32(noise) * rng.standard_normal(x.shape, dtype=np.float32)
    return x


def bipartite_recommender(num_users: int, num_items: int, *, dim: int = 16,
                          interactions_per_user: int = 20, num_features: int = 32,
                          temperature: float = 0.5, popularity: float = 1.0,
                          feature_noise: float = 0.5, seed: int = 0, val_fraction: float = 0.1,
                          test_fraction: float = 0.1) -> LinkData:
    """User-item interactions with personal taste, popularity skew and time.

    Latents ``z ~ N(0, I_dim)`` for users and items; item ``i`` has popularity rank ``r_i`` (a
    random permutation) and bias ``-popularity * log(1 + r_i)`` (Zipf). Every user draws
    ``interactions_per_user`` distinct items with probability ∝
    ``exp(z_u·z_i / (sqrt(dim) * temperature) + bias_i)`` (Gumbel top-k, O(users × items) work),
    in sequence: the j-th draw gets the j-th of the user's sorted uniform times in [0, 1). All
    interactions are ordered by time; the latest ``test_fraction`` are ``test``, the
    ``val_fraction`` before them ``val``, the rest ``train`` (so every train time precedes every
    val time precedes every test time). The graph holds train interactions in both directions;
    users are nodes ``0..U-1`` (``node_type`` 0), items ``U..U+I-1`` (``node_type`` 1).

    Features: latents through a shared random orthonormal projection to ``num_features``, plus
    ``N(0, feature_noise²)``. ``meta["timestamps"]`` maps each split to its (M,) float64 times;
    ``meta["oracle"]`` holds the latents, item biases and temperature for reference scoring.
    """
    u = _check_int("bipartite_recommender.num_users", num_users, 1)
    m = _check_int("bipartite_recommender.num_items", num_items, 1)
    dim = _check_int("bipartite_recommender.dim", dim, 1)
    k = _check_int("bipartite_recommender.interactions_per_user", interactions_per_user, 1)
    if k > m:
        raise ValueError(f"bipartite_recommender.interactions_per_user: {k} exceeds "
                         f"num_items={m}")
    f = _check_int("bipartite_recommender.num_features", num_features, 1)
    temperature = _check_real("bipartite_recommender.temperature", temperature, 0.0, np.inf,
                              low_open=True, high_open=True)
    popularity = _check_real("bipartite_recommender.popularity", popularity, 0.0, np.inf,
                             high_open=True)
    noise = _check_real("bipartite_recommender.feature_noise", feature_noise, 0.0, np.inf,
                        high_open=True)
    val_fraction = _check_real("bipartite_recommender.val_fraction", val_fraction, 0.0, 1.0)
    test_fraction = _check_real("bipartite_recommender.test_fraction", test_fraction, 0.0, 1.0)
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(f"bipartite_recommender: val_fraction + test_fraction = "
                         f"{val_fraction + test_fraction} must be below 1")
    seed = _check_int("bipartite_recommender.seed", seed, 0)
    r_latent, r_draw, r_feat = (np.random.default_rng(s)
                                for s in np.random.SeedSequence(seed).spawn(3))

    user_z = r_latent.standard_normal((u, dim))
    item_z = r_latent.standard_normal((m, dim))
    bias = -popularity * np.log1p(r_latent.permutation(m).astype(np.float64))
    scale = 1.0 / (np.sqrt(dim) * temperature)
    item_t = (item_z.T * scale).astype(np.float32)
    bias32 = bias.astype(np.float32)
    items = np.empty((u, k), np.int64)
    rows = max(1, DEFAULT_CHUNK // m)
    for s in range(0, u, rows):
        scores = user_z[s:s + rows].astype(np.float32) @ item_t
        scores += bias32
        items[s:s + rows] = _gumbel_topk(scores, k, r_draw)
    times = np.sort(r_draw.random((u, k)), axis=1).reshape(-1)
    users = np.repeat(np.arange(u, dtype=np.int64), k)
    pairs = np.stack([users, items.reshape(-1) + u], axis=1)

    order = np.argsort(times, kind="stable")
    total = order.size
    n_test = round(test_fraction * total)
    n_val = round(val_fraction * total)
    cut = (0, total - n_val - n_test, total - n_test, total)
    parts = {name: order[cut[i]:cut[i + 1]] for i, name in enumerate(("train", "val", "test"))}
    train = pairs[parts["train"]]

    x = _latent_features(np.concatenate([user_z, item_z]), f, noise, r_feat)
    node_type = np.concatenate([np.zeros(u, np.int8), np.ones(m, np.int8)])
    graph = Graph.from_edges(np.concatenate([train[:, 0], train[:, 1]]),
                             np.concatenate([train[:, 1], train[:, 0]]), u + m, x=x,
                             node_type=node_type, name="bipartite_recommender")
    meta = {"generator": "bipartite_recommender", "seed": seed,
            "timestamps": {name: times[idx] for name, idx in parts.items()},
            "oracle": {"user_latent": user_z, "item_latent": item_z, "item_bias": bias,
                       "temperature": temperature}}
    return LinkData(graph=graph, train=train, val=pairs[parts["val"]],
                    test=pairs[parts["test"]], num_users=u, num_items=m, meta=meta)


def movielens_udata(path: str | Path, *, num_users: int = 943, num_items: int = 1682,
                    min_per_user: int = 20, mean_per_user: int = 106, dim: int = 8,
                    temperature: float = 0.5, popularity: float = 1.0, seed: int = 0,
                    test_path: str | Path | None = None, test_fraction: float = 0.2) -> Path:
    """Write a MovieLens-100K-format log (``u.data``: ``user\\titem\\trating\\ttimestamp``,
    1-based ids) with personal taste and popularity skew; MovieLens itself may not be
    redistributed, so tests and benchmarks use this and users pass their own files.

    Each user rates ``min_per_user + Geometric`` items (mean ``mean_per_user``, at most all
    items), drawn like :func:`bipartite_recommender` (Gumbel top-k over ``z_u·z_i / (sqrt(dim)
    * temperature) - popularity * log(1 + rank_i)``); the rating is 1..5 from the user's
    affinity to the item. With ``test_path`` the log is split at random like MovieLens'
    ``u1.base``/``u1.test`` (``test_fraction`` of each user's ratings to the test file, the
    rest to ``path``).
    """
    u = _check_int("movielens_udata.num_users", num_users, 1)
    m = _check_int("movielens_udata.num_items", num_items, 1)
    low = _check_int("movielens_udata.min_per_user", min_per_user, 1)
    mean = _check_int("movielens_udata.mean_per_user", mean_per_user, low)
    dim = _check_int("movielens_udata.dim", dim, 1)
    rng = np.random.default_rng(_check_int("movielens_udata.seed", seed, 0))
    user_z = rng.standard_normal((u, dim))
    item_z = rng.standard_normal((m, dim))
    bias = -popularity * np.log1p(rng.permutation(m).astype(np.float64))
    scale = 1.0 / (np.sqrt(dim) * temperature)
    counts = np.minimum(low + rng.geometric(1.0 / max(1, mean - low + 1), u) - 1, m)
    rows = []
    for user in range(u):
        affinity = user_z[user] @ item_z.T * scale
        chosen = _gumbel_topk((affinity + bias)[None, :].astype(np.float32), int(counts[user]),
                              rng)[0]
        z = affinity[chosen] / max(float(affinity.std()), 1e-9)
        rating = np.clip(np.rint(3.2 + 1.1 * z + 0.6 * rng.standard_normal(len(chosen))), 1, 5)
        times = 874_724_710 + np.sort(rng.integers(0, 20_000_000, len(chosen)))
        test = (rng.random(len(chosen)) < test_fraction) if test_path is not None else \
            np.zeros(len(chosen), bool)
        rows.append((np.full(len(chosen), user + 1), chosen + 1, rating.astype(np.int64),
                     times, test))
    users, items, ratings, times, test = (np.concatenate(c) for c in zip(*rows, strict=True))
    order = rng.permutation(len(users))  # MovieLens' file order is not sorted

    def write(target: str | Path, keep: np.ndarray) -> None:
        sel = order[keep[order]]
        Path(target).write_text("".join(
            f"{a}\t{b}\t{c}\t{d}\n" for a, b, c, d in zip(
                users[sel].tolist(), items[sel].tolist(), ratings[sel].tolist(),
                times[sel].tolist(), strict=True)))

    write(path, ~test)
    if test_path is not None:
        write(test_path, test)
    return Path(path)
