"""Quality benchmark: a learned optimizer against tuned hand-made optimizers, same protocol.

Protocol (issue 3): Keras default initialization, batch 128, ``--steps`` steps,
final loss = mean training-minibatch loss over the last 10 steps, averaged
over ``--seeds`` seeds never used in meta-training; Adam, RMSProp, SGD and
SGD+Nesterov(0.9) tuned over 1e-3..1 in half-decade steps in the same run.

    python benchmarks/quality.py --weights fmnist-mlp-paper --problem fmnist_mlp

Prints the table and the ratio learned / best tuned baseline, and says whether
the target is met. Exits non-zero only when something fails, not on a miss.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", required=True, help="bundled name or weight file")
    parser.add_argument("--problem", default="fmnist_mlp")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--target", type=float, default=0.90,
                        help="the ratio to the best tuned baseline that counts as a win")
    parser.add_argument("--lr-grid", type=float, nargs="+", default=None)
    parser.add_argument("--out", default=None, help="JSON file for the full results")
    parser.add_argument("--plot", default=None)
    args = parser.parse_args(argv)

    from keras_learned_opt.compare import DEFAULT_LR_GRID, compare

    started = time.monotonic()
    result = compare(args.problem, [f"learned:{args.weights}", "adam", "rmsprop", "sgd", "nag"],
                     seeds=args.seeds, steps=args.steps, lr_grid=args.lr_grid or DEFAULT_LR_GRID,
                     verbose=0)
    print(result.table())
    learned = result.optimizers[0]
    ratio = result.ratio(learned)
    reference = result.best_baseline()
    if ratio is None:
        print(f"\nlearned optimizer {args.weights}: DIVERGED (target ratio <= {args.target})")
    else:
        verdict = "met" if ratio <= args.target else "MISSED"
        print(f"\nratio learned / best tuned baseline ({reference.label} at lr "
              f"{reference.best.learning_rate:g}) = {ratio:.3f}; target <= {args.target}: {verdict}")
    print(f"wall time {time.monotonic() - started:.0f} s")
    if args.out:
        result.to_json(args.out)
    if args.plot:
        result.plot(args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
