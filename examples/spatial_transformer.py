"""Spatial transformer alignment on Fashion-MNIST: learn to undo random affine distortions.

Each training pair is a Fashion-MNIST image distorted by a random affine map
(rotation +-30 degrees, scale 0.85-1.15, shear +-0.15, translation +-0.15 of the
half-width; see keras_learned_opt/vision/stn.py) together with the undistorted
image. A localisation CNN sees both and predicts an affine sampling map
(initialised to the identity); a differentiable bilinear sampler warps the
distorted image with it; the loss is the pixel mean squared error to the
undistorted image. The learned optimizer and the tuned baselines train the same
model from the same initial weights on the same pairs, and the rate of each
baseline is picked by the final training loss.

Reported at the picked rate: the alignment loss on held-out images of the
training classes and on held-out classes (by default 8 and 9, bag and ankle
boot, which training never sees), next to two references: doing nothing
(identity) and the exact inverse of each distortion (oracle; not zero because
parts of an image leave the frame and interpolating twice blurs). A picture
grid shows distorted inputs, the warps of the learned optimizer and of the best
baseline, and the targets.

    python examples/spatial_transformer.py                  # fast default: 300 steps, 1 seed
    python examples/spatial_transformer.py --steps 2000 --seeds 5 --out runs/stn_full

Writes <out>/stn_alignment.json, .csv, _curves.csv, .png and <out>/stn_alignment_grid.png.
"""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np

import _common
from keras_learned_opt.compare_result import CompareResult
from keras_learned_opt.fit_runner import FitProblem
from keras_learned_opt.vision.datasets import load_image_dataset
from keras_learned_opt.vision.grid import save_image_grid
from keras_learned_opt.vision.stn import (
    DistortionRanges,
    build_alignment_stn,
    identity_alignment_loss,
    make_alignment_pairs,
    oracle_alignment_loss,
)

DATA_SEED = 20_240_501  # distortions and subsets: fixed, the same for every optimizer and seed
GRID_ROWS_PER_SET = 4


def alignment_sets(train_pairs: int, eval_pairs: int, heldout_classes: Sequence[int],
                   ranges: DistortionRanges) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``{"train", "heldout_images", "heldout_classes"}`` -> ``(x, y, distortions)`` pairs.

    Training pairs come from the training split without the held-out classes;
    both held-out sets come from the test split.
    """
    (x_train, y_train), (x_test, y_test) = load_image_dataset("fashion_mnist")
    rng = np.random.default_rng(DATA_SEED)
    heldout = np.isin(y_train, heldout_classes)
    sources = {
        "train": x_train[~heldout],
        "heldout_images": x_test[~np.isin(y_test, heldout_classes)],
        "heldout_classes": x_test[np.isin(y_test, heldout_classes)],
    }
    sizes = {"train": train_pairs, "heldout_images": eval_pairs, "heldout_classes": eval_pairs}
    sets = {}
    for name, images in sources.items():
        rows = rng.choice(len(images), min(sizes[name], len(images)), replace=False)
        sets[name] = make_alignment_pairs(images[np.sort(rows)], rng, ranges)
    return sets


def save_grid(result: CompareResult, weights: dict[tuple[str, float], list[np.ndarray]],
              sets: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], path: str) -> None:
    """Distorted input / warped by the learned optimizer / by the best baseline / target."""
    model = build_alignment_stn(sets["train"][1].shape[1:])
    inputs = np.concatenate([sets[name][0][:GRID_ROWS_PER_SET] for name in ("heldout_images", "heldout_classes")])
    targets = inputs[..., inputs.shape[-1] // 2:]
    columns = {"distorted input": inputs[..., : inputs.shape[-1] // 2]}
    chosen = [o for o in result.optimizers if not o.baseline] + [result.best_baseline()]
    for opt in chosen:
        if opt is None or opt.best is None:
            continue  # every rate diverged: nothing to show
        model.set_weights(weights[(opt.label, opt.best.learning_rate)])
        columns[f"{opt.label}\n(lr {opt.best.learning_rate:g})"] = model.predict(inputs, verbose=0)
    columns["example (target)"] = targets
    labels = [f"held-out image {i + 1}" for i in range(GRID_ROWS_PER_SET)]
    labels += [f"held-out class {i + 1}" for i in range(GRID_ROWS_PER_SET)]
    save_image_grid(columns, path, title=f"alignment after {result.steps} steps (seed {result.seeds[0]})",
                    row_labels=labels)
    print(f"wrote {path}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _common.make_parser(__doc__.splitlines()[0], steps=300, seeds=1, out="runs/spatial_transformer",
                                 batch_size=64)
    parser.add_argument("--train-pairs", type=int, default=12000, help="distorted training pairs")
    parser.add_argument("--eval-pairs", type=int, default=1000, help="pairs in each held-out set")
    parser.add_argument("--heldout-classes", default="8,9",
                        help="Fashion-MNIST classes never trained on (default: bag, ankle boot)")
    args = _common.parse_args(parser, argv, __file__)

    def body() -> None:
        started = time.monotonic()
        heldout_classes = [int(c) for c in args.heldout_classes.split(",") if c.strip()]
        if not heldout_classes or not set(heldout_classes) <= set(range(10)):
            raise ValueError("--heldout-classes: give classes between 0 and 9, e.g. 8,9")
        ranges = DistortionRanges()
        sets = alignment_sets(args.train_pairs, args.eval_pairs, heldout_classes, ranges)
        references = {}
        for name in ("heldout_images", "heldout_classes"):
            x, y, theta = sets[name]
            references[f"{name}_identity_loss"] = identity_alignment_loss(x, y)
            references[f"{name}_oracle_loss"] = oracle_alignment_loss(x, y, theta)
        problem = FitProblem(
            "stn_alignment", lambda: build_alignment_stn(sets["train"][1].shape[1:]),
            sets["train"][:2], batch_size=args.batch_size, loss="mse",
            eval_data={name: sets[name][:2] for name in ("heldout_images", "heldout_classes")})

        # Keep the trained weights of the first seed's runs (the first run at each rate) for the grid.
        weights: dict = {}

        def keep_weights(label: str, rate: float, seed: int, runner) -> None:
            weights.setdefault((label, rate), runner.model.get_weights())

        result = _common.run_comparison(problem, args, {
            "dataset": "fashion_mnist", "train_pairs": len(sets["train"][0]),
            "eval_pairs": args.eval_pairs, "heldout_classes": heldout_classes,
            "batch_size": args.batch_size, "data_seed": DATA_SEED,
            "distortion_ranges": {"rotation_degrees": ranges.rotation_degrees, "scale": list(ranges.scale),
                                  "shear": ranges.shear, "translation": ranges.translation},
            "references": references,
        }, on_run_end=keep_weights)
        _common.record_wall_time(result, started)
        _common.save_result(result, args.out, "stn_alignment", legend_metric="heldout_classes_loss")
        print()
        print("references (pixel MSE): " + ", ".join(f"{k} {v:.4g}" for k, v in references.items()))
        save_grid(result, weights, sets, f"{args.out}/stn_alignment_grid.png")

    return _common.run_main(body, args)


if __name__ == "__main__":
    raise SystemExit(main())
