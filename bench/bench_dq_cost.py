"""Cost of Degree-Quant over plain QAT: seconds per full-graph training epoch on Cora.

One epoch is what ``qgnn.training.tasks.node`` does per epoch: a training step (forward,
backward, Adam) and an evaluation forward pass. The three variants (FP32, QAT, DQ, each with its
default ``QuantConfig``) start from the same weights and are timed round-robin
(``harness.interleave``), so machine load drifts hit them alike; the figure is the ratio of
medians. The reference implementation of Degree-Quant is about 5.7x slower than its QAT
baseline; the target here is at most 2x.

``python -m qgnn.bench.bench_dq_cost [--bits 8] [--repeat 40] [--threads 1]`` prints a table and
writes ``bench/results/dq_cost.json``.
"""

from __future__ import annotations

import argparse
from typing import Any


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bits", type=int, default=8, help="quantisation width (default 8)")
    p.add_argument("--repeat", type=int, default=40, help="timed epochs per variant")
    p.add_argument("--warmup", type=int, default=3, help="untimed epochs per variant first")
    p.add_argument("--hidden", type=int, default=64, help="GCN hidden width")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    p.add_argument("--dataset", default="cora", help="a node-classification dataset spec")


def run_cli(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from qgnn.bench.dq_cost_measure import REFERENCE, TARGET, measure
    from qgnn.bench.harness import markdown_table, write_result

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    res = measure(args.bits, args.repeat, args.warmup, args.hidden, args.dataset)
    rows = [(name, f"{e['median_s'] * 1e3:.1f}", f"{e['p10_s'] * 1e3:.1f}",
             f"{e['p90_s'] * 1e3:.1f}") for name, e in res["epoch"].items()]
    print(markdown_table(["variant", "median ms", "p10 ms", "p90 ms"], rows,
                         ["l", "r", "r", "r"]))
    print(f"DQ / QAT = {res['dq_over_qat']:.2f} (target <= {TARGET}, reference ~{REFERENCE}); "
          f"QAT / FP32 = {res['qat_over_fp32']:.2f}")
    print(f"wrote {write_result('dq_cost', res)}")
    return res


def add_parser(sub: argparse._SubParsersAction) -> None:
    """``qgnn bench dq-cost`` (registered by listing this module in qgnn.bench.cli)."""
    p = sub.add_parser("dq-cost", help="Degree-Quant epoch cost against plain QAT (Cora GCN)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_arguments(p)
    p.set_defaults(func=lambda args: 0 if run_cli(args) else 1)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_arguments(parser)
    return run_cli(parser.parse_args(argv))


if __name__ == "__main__":
    main()
