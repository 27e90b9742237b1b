"""MobileNetV3-Small on Fashion-MNIST at 32x32x3, trained with model.fit: learned optimizer beside tuned Adam.

A stress test of the optimizer on a real architecture: BatchNormalization
(non-trainable moving statistics), depthwise convolutions, squeeze-and-excite
blocks, Dropout, ~1.5M parameters in ~140 trainable variables. Both optimizers
train from the same initial weights on the same minibatches; Adam is tuned over
the learning-rate grid and reported at the rate with the lowest final training
loss. Besides loss curves and test accuracy it reports the median step time and
the optimizer's memory (its variables), next to Adam's.

Input: the 28x28 grey images are zero-padded to 32x32 (the smallest size
MobileNetV3 accepts), scaled to [-1, 1] and repeated into 3 channels, inside
the model (``include_preprocessing=False``: the data is not in [0, 255]).

BatchNorm momentum: Keras' MobileNetV3 uses 0.999, so after a few hundred steps
the moving statistics would still be mostly their initial values and the test
accuracy would measure that rather than the optimizer; ``--bn-momentum``
(default 0.9) sets it for every BatchNorm layer, the same for both optimizers.

    python examples/mobilenet.py                      # fast default: 200 steps, 1 seed
    python examples/mobilenet.py --steps 1000 --seeds 3 --baselines adam,rmsprop,sgd,nag

Writes <out>/mobilenet_v3_small.json, .csv, _curves.csv and .png.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Sequence

import keras
import numpy as np

import _common
from keras_learned_opt.compare_result import CompareResult
from keras_learned_opt.fit_runner import FitProblem
from keras_learned_opt.vision.datasets import load_image_dataset


def build_mobilenet(alpha: float = 1.0, bn_momentum: float = 0.9, dropout: float = 0.2) -> keras.Model:
    """``[batch, 28, 28, 1]`` images in [0, 1] -> ``[batch, 10]`` logits through MobileNetV3Small."""
    backbone = keras.applications.MobileNetV3Small(
        input_shape=(32, 32, 3), alpha=alpha, weights=None, classes=10, dropout_rate=dropout,
        include_preprocessing=False, classifier_activation=None)
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = bn_momentum  # read when the training step is traced
    images = keras.Input((28, 28, 1))
    grey = keras.layers.Rescaling(2.0, offset=-1.0)(keras.layers.ZeroPadding2D(2)(images))
    rgb = keras.layers.Concatenate()([grey, grey, grey])
    return keras.Model(images, backbone(rgb), name="mobilenet_v3_small_fmnist")


def describe(model: keras.Model) -> dict:
    """Parameter and variable counts and the layer types that make the architecture demanding."""
    layers = Counter(type(layer).__name__ for layer in model._flatten_layers(include_self=False))
    return {
        "parameters": int(sum(v.numpy().size for v in model.trainable_variables)),
        "trainable_variables": len(model.trainable_variables),
        "non_trainable_variables": len(model.non_trainable_variables),
        "batch_norm_layers": layers["BatchNormalization"],
        "depthwise_conv_layers": layers["DepthwiseConv2D"],
        "conv_layers": layers["Conv2D"],
    }


def cost_table(result: CompareResult, parameters: int) -> str:
    """Markdown: step time and optimizer memory of each optimizer.

    Neither depends on the learning rate, so both are averaged over all of an
    optimizer's measured runs (every rate and seed), picked rate or not.
    """
    lines = ["| optimizer | step time (ms, median per run, mean over runs) | optimizer state (MiB) "
             "| state bytes per parameter |",
             "|---|---|---|---|"]
    for opt in result.optimizers:
        step_ms = np.concatenate([run.metrics.get("step_ms", []) for run in opt.runs])
        mib = np.concatenate([run.metrics.get("optimizer_state_mib", []) for run in opt.runs])
        step_ms, mib = step_ms[np.isfinite(step_ms)], mib[np.isfinite(mib)]
        if not len(step_ms):
            lines.append(f"| {opt.label} | not measured (every run's loss went non-finite) | — | — |")
            continue
        lines.append(f"| {opt.label} | {np.mean(step_ms):.1f} | {np.mean(mib):.1f} | "
                     f"{np.mean(mib) * 2**20 / parameters:.1f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _common.make_parser(__doc__.splitlines()[0], steps=200, seeds=1, out="runs/mobilenet",
                                 batch_size=128, baselines="adam")
    parser.add_argument("--train-size", type=int, default=None,
                        help="train on a fixed random subset of this many images (default: all 60000)")
    parser.add_argument("--test-size", type=int, default=2000,
                        help="test accuracy on a fixed random subset of the 10000 test images")
    parser.add_argument("--alpha", type=float, default=1.0, help="MobileNetV3 width multiplier")
    parser.add_argument("--bn-momentum", type=float, default=0.9)
    args = _common.parse_args(parser, argv, __file__)

    def body() -> None:
        started = time.monotonic()
        train, test = load_image_dataset("fashion_mnist")
        train = _common.subset(*train, args.train_size)
        test = _common.subset(*test, args.test_size, seed=1)

        def build() -> keras.Model:
            return build_mobilenet(args.alpha, args.bn_momentum)

        facts = describe(build())
        print("model: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in facts.items()))
        problem = FitProblem("mobilenet_v3_small", build, train, batch_size=args.batch_size,
                             eval_data={"test": test}, metrics=["accuracy"])
        result = _common.run_comparison(problem, args, {
            "dataset": "fashion_mnist padded to 32x32x3", "train_images": len(train[0]),
            "test_images": len(test[0]), "batch_size": args.batch_size, "alpha": args.alpha,
            "bn_momentum": args.bn_momentum, **facts,
            "step_ms": "median wall time of a model.fit step after the first, on this machine",
        })
        _common.record_wall_time(result, started)
        costs = cost_table(result, facts["parameters"])
        result.metadata["cost_table"] = costs
        _common.save_result(result, args.out, problem.name, legend_metric="test_accuracy")
        print()
        print(costs)

    return _common.run_main(body, args)


if __name__ == "__main__":
    raise SystemExit(main())
