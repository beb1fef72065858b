"""Command-line flags for minibatch sampling, for ``qgnn train`` (and the torchrun entry point).

``add_sampling_arguments(parser)`` adds the flags to an argparse parser;
``sampling_config_from_args(args)`` turns the parsed namespace into a validated
:class:`SamplingConfig` (bad values raise ``ValueError`` naming the field).
"""

from __future__ import annotations

import argparse

from qgnn.training.sampling.config import (
    ESTIMATORS,
    EVAL_MODES,
    FEATURE_DTYPES,
    GNS_LAYERS,
    SAMPLERS,
    SamplingConfig,
    parse_fanouts,
)


def add_sampling_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    defaults = SamplingConfig()
    group = parser.add_argument_group("minibatch sampling (docs/gns.md)")
    group.add_argument("--sampler", choices=SAMPLERS, default=defaults.sampler,
                       help="full: full-graph training; uniform: GraphSAGE node-wise sampling; "
                            "gns: Global Neighbor Sampling (default: %(default)s)")
    group.add_argument("--fanouts", default=",".join(map(str, defaults.fanouts)),
                       help="neighbours per hop, seeds' hop first, -1 = all; one per layer "
                            "(default: %(default)s)")
    group.add_argument("--batch-size", type=int, default=defaults.batch_size,
                       help="seed nodes (node task) or positive pairs (link task) per step "
                            "(default: %(default)s)")
    group.add_argument("--cache-fraction", type=float, default=defaults.cache_fraction,
                       help="gns: expected cache size as a fraction of the nodes "
                            "(default: %(default)s)")
    group.add_argument("--cache-refresh-period", type=int,
                       default=defaults.cache_refresh_period,
                       help="gns: redraw the cache every this many epochs (default: %(default)s)")
    group.add_argument("--gns-estimator", choices=ESTIMATORS, default=defaults.gns_estimator,
                       help="gns: unbiased (Horvitz-Thompson over the cache draw), normalized "
                            "(weights rescaled per node: biased, lower variance) or stratified "
                            "(plus a few non-cached draws: unbiased given the cache, lowest "
                            "variance, more bytes) (default: %(default)s)")
    group.add_argument("--gns-uncached-fanout", type=int, default=defaults.gns_uncached_fanout,
                       help="gns stratified: non-cached in-neighbours drawn per destination "
                            "that has cached ones (default: %(default)s)")
    group.add_argument("--gns-layers", choices=GNS_LAYERS, default=defaults.gns_layers,
                       help="gns: input (only the input layer draws from the cache, as the "
                            "paper) or all (every hop: fewer bytes, more variance) "
                            "(default: %(default)s)")
    group.add_argument("--feature-dtype", choices=FEATURE_DTYPES, default=defaults.feature_dtype,
                       help="input features as held in host memory and sent to the device: "
                            "float32, or uint8 (per-column affine code decoded on the device: "
                            "a quarter of the bytes) (default: %(default)s)")
    group.add_argument("--workers", type=int, default=defaults.workers,
                       help="sampling threads (default: %(default)s)")
    group.add_argument("--prefetch", type=int, default=defaults.prefetch,
                       help="batches prepared ahead of the trainer (default: %(default)s)")
    group.add_argument("--device", default=defaults.device,
                       help="auto, cpu, cuda or cuda:<index> (default: %(default)s)")
    group.add_argument("--eval-mode", choices=EVAL_MODES, default=defaults.eval,
                       help="full: exact layer-wise inference; sampled: uniform fanouts "
                            "(default: %(default)s)")
    return parser


def sampling_config_from_args(args: argparse.Namespace) -> SamplingConfig:
    return SamplingConfig(sampler=args.sampler, fanouts=parse_fanouts(args.fanouts),
                          batch_size=args.batch_size, cache_fraction=args.cache_fraction,
                          cache_refresh_period=args.cache_refresh_period,
                          gns_estimator=args.gns_estimator, gns_layers=args.gns_layers,
                          gns_uncached_fanout=args.gns_uncached_fanout,
                          feature_dtype=args.feature_dtype, workers=args.workers,
                          prefetch=args.prefetch, device=args.device, eval=args.eval_mode)
