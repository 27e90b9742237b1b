"""Drift of a learned update: does it average to zero when the gradient does?

Feeds each weight file's network, from a zero state, gradients drawn from
N(0, sigma^2) (sigma = 0 is an exact zero) for ``--steps`` steps on 4000
coordinates, and prints the mean update at the last step, the mean update
size, and the cumulative mean drift (sum of updates, averaged over
coordinates) after 100 steps and at the end. A drift that grows linearly with
the step count moves every parameter the same way whatever the gradient says;
an antisymmetric network (``NetworkConfig(antisymmetric=True)``) has none by
construction.

    python benchmarks/update_drift.py --weights paper-fmnist-mlp path/to/other.h5
    python benchmarks/update_drift.py --tiny
"""

from __future__ import annotations

import _common  # noqa: F401  (sets sys.path and the backend before keras loads)

import argparse

import numpy as np
from keras import ops

from keras_learned_opt.bundled import resolve_weights
from keras_learned_opt.network import apply_network, zero_state
from keras_learned_opt.weights import load_weight_file

SIGMAS = (0.0, 1e-4, 1e-3, 1e-2)


def drift(arrays: dict, config, sigma: float, steps: int, rows: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    state = zero_state(config, rows)
    total = np.zeros(rows)
    row = {}
    for t in range(1, steps + 1):
        gradient = (rng.standard_normal(rows) * sigma).astype("float32")
        update, state = apply_network(arrays, config, ops.convert_to_tensor(gradient), state, t)
        update = np.asarray(ops.convert_to_numpy(update), dtype=np.float64)
        total += update
        if t == min(100, steps):
            row["drift_100"] = float(total.mean())
    row.update(last_mean=float(update.mean()), last_abs=float(np.abs(update).mean()),
               drift_end=float(total.mean()))
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", nargs="+", default=["paper-fmnist-mlp"],
                        help="bundled names or weight files")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--rows", type=int, default=4000)
    parser.add_argument("--tiny", action="store_true", help="20 steps on 100 coordinates")
    args = parser.parse_args(argv)
    steps, rows = (20, 100) if args.tiny else (args.steps, args.rows)
    print(f"{rows} coordinates, {steps} steps, gradients ~ N(0, sigma^2), zero initial state\n")
    print(f"| weights | sigma | mean update at step {steps} | mean abs update | "
          f"cumulative mean drift after {min(100, steps)} | after {steps} |")
    print("|---|---|---|---|---|---|")
    for name in args.weights:
        loaded = load_weight_file(resolve_weights(name))
        for sigma in SIGMAS:
            row = drift(loaded.arrays, loaded.config, sigma, steps, rows)
            label = name + (" (antisymmetric)" if loaded.config.antisymmetric else "")
            print(f"| {label} | {sigma:g} | {row['last_mean']:.2e} | {row['last_abs']:.2e} | "
                  f"{row['drift_100']:.3f} | {row['drift_end']:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
