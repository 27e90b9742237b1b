"""Optimizer state bytes per parameter and peak process memory, learned vs Adam.

Usage: python benchmarks/memory.py [--tiny] [--params N]

Each variant runs in a fresh Python process (peak RSS is per process): it makes
the variables of an 8-layer dense model of about ``N`` parameters (default 1M)
and their gradients, notes the resident memory, then builds the optimizer and
runs a few compiled steps. Reported: the optimizer's state bytes per parameter
(its variables less the network's shared arrays and the step counter: 80
floats, 320 bytes, per parameter for the 2x20 LSTM at float32, 160 at
bfloat16; Adam 8), and the growth of peak RSS over the level before the
optimizer existed (state, plus the transient tensors of the update step, plus
the traced graph).
"""

from __future__ import annotations

import json
import subprocess
import sys

import _common

VARIANTS = {
    "Adam": {},
    "learned per-variable": {"fused": False},
    "learned fused (default grouping)": {"fused": True},
    "learned fused, one call for all": {"fused": True, "fused_alone_size": 0,
                                        "fused_group_size": 0},
    "learned fused, fused_group_size=2**18": {"fused": True, "fused_group_size": 2**18},
    "learned fused, bf16 state": {"fused": True, "state_dtype": "bfloat16"},
    "learned per-variable, bf16 state": {"fused": False, "state_dtype": "bfloat16"},
}


def _rss_bytes() -> int:
    import os

    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def child(variant: str, params: int, weights: str, steps: int) -> dict:
    """Runs in the child process: measure one variant, return its figures."""
    import numpy as np
    import tensorflow as tf
    import keras

    import keras_learned_opt as klo
    from update_throughput import make_variables

    width = int(round((params / 8) ** 0.5))
    variables, grads = make_variables(width)
    n = sum(int(np.prod(v.shape)) for v in variables)
    tf.function(lambda: tf.reduce_sum(grads[0]))()  # start the runtime before the baseline
    baseline = _rss_bytes()
    if variant == "Adam":
        opt = keras.optimizers.Adam(1e-3)
    else:
        opt = klo.LearnedOptimizer(weights, learning_rate=1e-3, **VARIANTS[variant])
    opt.build(variables)
    step = tf.function(lambda: opt.apply(grads, variables))
    for _ in range(steps):
        step()
    shared = {id(v) for v in getattr(opt, "_network_weights", {}).values()}
    shared.add(id(opt.iterations))
    state = sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize
                for v in opt.variables if id(v) not in shared)
    return {"params": n, "state_bytes": state,
            "peak_growth": _common.peak_rss_bytes() - baseline, "peak": _common.peak_rss_bytes()}


def main() -> int:
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--params", type=int, default=None, help="model size (default 1M; tiny 10k)")
    p.add_argument("--child", default=None, help=argparse_hidden())
    args = p.parse_args()
    params = args.params or (10_000 if args.tiny else 1_000_000)
    steps = 2 if args.tiny else 3
    weights = _common.weight_file(args.weights)
    if args.child:
        print(json.dumps(child(args.child, params, weights, steps)))
        return 0
    print(_common.machine_note())
    rows, adam = [], None
    # --tiny: two processes only (each pays TensorFlow's start-up), covering the
    # Adam baseline and the path with the most moving parts.
    chosen = ["Adam", "learned fused, bf16 state"] if args.tiny else list(VARIANTS)
    for variant in chosen:
        done = subprocess.run(
            [sys.executable, __file__, "--child", variant, "--params", str(params),
             "--weights", weights],
            capture_output=True, text=True,
        )
        if done.returncode != 0:
            print(done.stderr[-3000:], file=sys.stderr)
            return 1
        r = json.loads(done.stdout.strip().splitlines()[-1])
        adam = adam or r
        rows.append([variant, r["state_bytes"] / r["params"], r["state_bytes"] / 4 / r["params"],
                     r["peak_growth"] / 2**20, r["peak_growth"] / r["params"],
                     r["peak"] / 2**20])
    print(f"model: 8 dense layers, {adam['params']} parameters")
    print(_common.table(["optimizer", "state B/param", "state floats/param (4 B)",
                         "peak RSS growth MiB", "growth B/param", "peak RSS MiB"], rows))
    return 0


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    raise SystemExit(main())
