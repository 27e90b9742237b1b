"""`make demo`: the learned optimizer training a vision model beside tuned Adam.

    python -m keras_learned_opt.demo [--problem fmnist_mlp] [--steps 100] [--seeds 3]

Loads Fashion-MNIST (Debian package, else the Keras cache, else a download),
trains the model from the same initializations on the same minibatches with
``LearnedOptimizer()`` (the bundled default) and with Adam tuned over a
learning-rate grid, prints the table and writes a learning-curve plot.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m keras_learned_opt.demo", description=__doc__)
    parser.add_argument("--problem", default="fmnist_mlp",
                        help="fmnist_mlp, fmnist_cnn, ... (see keras_learned_opt.problems)")
    parser.add_argument("--weights", default=None, help="bundled name or file; default: the default")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", default="demo-results", help="folder for JSON and plot")
    args = parser.parse_args(argv)

    from keras_learned_opt.bundled import default_pretrained_name
    from keras_learned_opt.compare import compare

    weights = args.weights or default_pretrained_name()
    os.makedirs(args.out, exist_ok=True)
    started = time.monotonic()
    result = compare(args.problem, [f"learned:{weights}", "adam"], seeds=args.seeds,
                     steps=args.steps, verbose=1)
    print()
    print(result.table())
    json_path = result.to_json(os.path.join(args.out, f"{args.problem}.json"))
    plot_path = result.plot(os.path.join(args.out, f"{args.problem}.png"),
                            title=f"{args.problem}: LearnedOptimizer('{weights}') vs tuned Adam")
    print(f"\nwrote {json_path} and {plot_path} in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
