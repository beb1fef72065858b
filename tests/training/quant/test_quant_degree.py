import numpy as np
import pytest
import torch
from qgnn.graph.container import Graph
from qgnn.training.nn.block import Block, full_graph_block
from qgnn.training.quant.degree_quant import (
    DegreeProtection,
    degree_cdf,
    protection_probabilities,
)


def skewed_graph(n=400, seed=0):
    """Preferential-attachment-like graph: a wide in-degree spread."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, n + 1) ** 0.9
    dst = rng.choice(n, size=6 * n, p=weights / weights.sum())
    src = rng.integers(0, n, size=6 * n)
    return Graph.from_edges(src, dst, n)


def test_degree_cdf_by_hand():
    cdf = degree_cdf(np.array([0, 1, 1, 2, 5]))
    np.testing.assert_allclose(cdf.numpy(), [0.2, 0.6, 0.8, 0.8, 0.8, 1.0])


def test_probabilities_interpolate_between_p_min_and_p_max():
    cdf = degree_cdf(np.array([0, 1, 1, 2, 5]))
    p = protection_probabilities(torch.tensor([0, 1, 2, 5, 40]), cdf, 0.1, 0.3)
    np.testing.assert_allclose(p.numpy(), [0.14, 0.22, 0.26, 0.3, 0.3], rtol=1e-6)


@pytest.mark.parametrize(("degrees", "field"), [
    (np.array([1.5, 2.0]), "integer"), (np.array([-1, 2]), ">= 0"), (np.zeros(0, int), "1-D")])
def test_bad_degrees_are_refused(degrees, field):
    with pytest.raises(ValueError, match=field):
        degree_cdf(degrees)


@pytest.mark.parametrize(("p_min", "p_max", "field"), [(-0.1, 0.2, "p_min"), (0.1, 1.5, "p_max"),
                                                       (0.3, 0.2, "p_min")])
def test_bad_probabilities_are_refused(p_min, p_max, field):
    with pytest.raises(ValueError, match=field):
        DegreeProtection(np.array([1, 2]), p_min, p_max)


def test_mask_frequencies_follow_the_degree_cdf():
    graph = skewed_graph()
    deg = graph.in_degree()
    block = full_graph_block(graph)
    prot = DegreeProtection(graph, 0.0, 0.5)
    gen = torch.Generator().manual_seed(1)
    draws = 2000
    hits = torch.zeros(graph.num_nodes)
    for _ in range(draws):
        hits += prot.annotate_blocks(block, 1, gen)[0].protect
    freq = hits.numpy() / draws
    expected = 0.5 * (deg[:, None] >= deg[None, :]).mean(axis=1)  # p_max * CDF(deg)
    # pool nodes by degree: each pool's frequency is a binomial mean
    for d in np.unique(deg):
        pool = deg == d
        sd = np.sqrt(expected[pool][0] * (1 - expected[pool][0]) / (draws * pool.sum()))
        assert abs(freq[pool].mean() - expected[pool][0]) <= 5 * sd + 1e-9, d
    top, bottom = deg >= np.quantile(deg, 0.9), deg <= np.quantile(deg, 0.1)
    assert freq[top].mean() > 0.4 and freq[bottom].mean() < 0.1


def test_eval_protects_nothing():
    graph = skewed_graph(50)
    prot = DegreeProtection(graph, 1.0, 1.0)
    block = full_graph_block(graph).replace(protect=torch.ones(50, dtype=torch.bool))
    assert all(b.protect is None for b in prot.annotate_blocks(block, 2, training=False))
    assert all(bool(b.protect.all()) for b in prot.annotate_blocks(block, 2, training=True))


def test_per_layer_masks_are_independent_and_shared_masks_identical():
    graph = skewed_graph(300)
    block = full_graph_block(graph)
    gen = torch.Generator().manual_seed(0)
    per_layer = DegreeProtection(graph, 0.5, 0.5, "per-layer").annotate_blocks(block, 3, gen)
    assert len(per_layer) == 3
    assert not torch.equal(per_layer[0].protect, per_layer[1].protect)
    shared = DegreeProtection(graph, 0.5, 0.5, "shared").annotate_blocks(block, 3, gen)
    assert torch.equal(shared[0].protect, shared[1].protect)
    assert torch.equal(shared[1].protect, shared[2].protect)


def sampled_chain():
    """Two chained blocks: 6 -> 4 nodes, then 4 -> 2 (destinations are the first sources)."""
    b0 = Block(src=torch.tensor([4, 5, 2, 3]), dst=torch.tensor([0, 1, 2, 3]), num_src=6,
               num_dst=4, src_ids=torch.arange(6), in_degree=torch.tensor([9, 9, 9, 0, 0, 0]))
    b1 = Block(src=torch.tensor([2, 3]), dst=torch.tensor([0, 1]), num_src=4, num_dst=2,
               src_ids=torch.arange(4), in_degree=torch.tensor([9, 9, 9, 0]))
    return [b0, b1]


def test_sampled_blocks_use_full_graph_degree_and_shared_masks_are_sliced():
    # CDF of the full graph's degrees {1, 1, 9, 9}: CDF(0) = 0 and CDF(9) = 1, so with p in
    # [0, 1] the blocks' degree-9 sources are always protected and degree-0 ones never, however
    # few edges the sampled blocks hold.
    prot = DegreeProtection(np.array([1, 1, 9, 9]), 0.0, 1.0, "shared")
    blocks = prot.annotate_blocks(sampled_chain(), 2, torch.Generator().manual_seed(3))
    assert blocks[0].protect.tolist() == [True, True, True, False, False, False]
    assert torch.equal(blocks[1].protect, blocks[0].protect[:4])


def test_chain_and_layer_count_are_checked():
    prot = DegreeProtection(np.array([1, 2]), 0.0, 0.1)
    chain = sampled_chain()
    with pytest.raises(ValueError, match="as many blocks"):
        prot.annotate_blocks(chain, 3)
    broken = [chain[0], chain[1].replace(num_src=5)]
    with pytest.raises(ValueError, match="block 1 has 5 sources"):
        prot.annotate_blocks(broken, 2)
    with pytest.raises(ValueError, match="mask"):
        DegreeProtection(np.array([1, 2]), 0.0, 0.1, mask="sometimes")
