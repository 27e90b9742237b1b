"""Quality benchmark: a learned optimizer against tuned hand-made optimizers, same protocol.

Protocol (issue 3): Keras default initialization, batch 128, ``--steps`` steps,
final loss = mean training-minibatch loss over the last 10 steps, averaged
over ``--seeds`` seeds never used in meta-training; Adam, RMSProp, SGD and
SGD+Nesterov(0.9) tuned over 1e-3..1 in half-decade steps in the same run.

    python benchmarks/quality.py --weights paper-fmnist-mlp-dbd --seeds 50
    python benchmarks/quality.py --selection --seeds 32 --weights a.h5 b.h5   # choose a file

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
    parser.add_argument("--weights", required=True, nargs="+",
                        help="bundled names or weight files (the ratio is printed for each)")
    parser.add_argument("--problem", default="fmnist_mlp")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--selection", action="store_true",
                        help="use the selection seeds (benchmarks/generalization.py --selection) "
                             "instead of the evaluation seeds: for choosing among candidates")
    parser.add_argument("--target", type=float, default=0.90,
                        help="the ratio to the best tuned baseline that counts as a win")
    parser.add_argument("--lr-grid", type=float, nargs="+", default=None)
    parser.add_argument("--out", default=None, help="JSON file for the full results")
    parser.add_argument("--plot", default=None)
    args = parser.parse_args(argv)

    from keras_learned_opt.compare import DEFAULT_LR_GRID, compare

    started = time.monotonic()
    seeds = args.seeds
    if args.selection:
        from generalization import suite_seeds

        seeds = suite_seeds(args.seeds, selection=True)
    learned_specs = [f"learned:{weights}" for weights in args.weights]
    result = compare(args.problem, learned_specs + ["adam", "rmsprop", "sgd", "nag"],
                     seeds=seeds, steps=args.steps, lr_grid=args.lr_grid or DEFAULT_LR_GRID,
                     verbose=0)
    print(result.table())
    reference = result.best_baseline()
    print()
    for weights, learned in zip(args.weights, result.optimizers):
        ratio = result.ratio(learned)
        if ratio is None:
            print(f"learned optimizer {weights}: DIVERGED (target ratio <= {args.target})")
        else:
            verdict = "met" if ratio <= args.target else "MISSED"
            print(f"{weights}: ratio learned / best tuned baseline ({reference.label} at lr "
                  f"{reference.best.learning_rate:g}) = {ratio:.3f}; target <= {args.target}: "
                  f"{verdict}")
    print(f"wall time {time.monotonic() - started:.0f} s")
    if args.out:
        result.to_json(args.out)
    if args.plot:
        result.plot(args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
