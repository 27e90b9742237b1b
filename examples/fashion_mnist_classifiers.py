"""The paper's MLP and a small CNN on Fashion-MNIST (or MNIST, CIFAR-10), trained with model.fit.

For each model, the learned optimizer and the hand-made baselines (Adam, RMSProp,
SGD, Nesterov momentum; each tuned over a learning-rate grid, the rate picked by
the final training loss) train from the same initial weights on the same
minibatches for every seed. Reports training-loss curves and, at the picked
rate, the test accuracy on the dataset's test split.

Models:
    mlp  784-20 (sigmoid)-10, the MNIST network of Andrychowicz et al. 2016
         (the input grows to 3072 for CIFAR-10);
    cnn  conv(8)-pool-conv(16)-pool-dense(10), ReLU (problems.small_cnn).

    python examples/fashion_mnist_classifiers.py                  # fast default
    python examples/fashion_mnist_classifiers.py --steps 2000 --seeds 5 --out runs/classifiers_full
    python examples/fashion_mnist_classifiers.py --dataset cifar10 --models cnn

Writes <out>/<dataset>_<model>.json (results and metadata), .csv, _curves.csv, .png.
"""

from __future__ import annotations

import functools
import time
from typing import Sequence

import numpy as np

import _common
from keras_learned_opt.fit_runner import FitProblem
from keras_learned_opt.problems import mlp_builder, small_cnn
from keras_learned_opt.vision.datasets import DATASETS, load_image_dataset

MODELS = ("mlp", "cnn")


def make_problem(model: str, dataset: str, train: tuple[np.ndarray, np.ndarray],
                 test: tuple[np.ndarray, np.ndarray], batch_size: int) -> FitProblem:
    """A ``FitProblem`` for ``model`` on images ``[N, H, W, C]``; test accuracy after every run."""
    (x, y), (x_test, y_test) = train, test
    image_shape = x.shape[1:]
    if model == "mlp":
        inputs = int(np.prod(image_shape))
        build = mlp_builder((20,), "sigmoid", inputs=inputs)
        x, x_test = x.reshape(len(x), inputs), x_test.reshape(len(x_test), inputs)  # views, no copies
    elif model == "cnn":
        build = functools.partial(small_cnn, input_shape=image_shape)
    else:
        raise ValueError(f"unknown model '{model}'; choose from {list(MODELS)}")
    return FitProblem(f"{dataset}_{model}", build, (x, y), batch_size=batch_size,
                      eval_data={"test": (x_test, y_test)}, metrics=["accuracy"])


def main(argv: Sequence[str] | None = None) -> int:
    parser = _common.make_parser(__doc__.splitlines()[0], steps=300, seeds=2,
                                 out="runs/fashion_mnist_classifiers", batch_size=128)
    parser.add_argument("--dataset", choices=DATASETS, default="fashion_mnist")
    parser.add_argument("--models", default="mlp,cnn", help="comma-separated, from " + ", ".join(MODELS))
    parser.add_argument("--train-size", type=int, default=None,
                        help="train on a fixed random subset of this many images (default: all)")
    parser.add_argument("--test-size", type=int, default=None,
                        help="evaluate on a fixed random subset of the test split (default: all)")
    args = _common.parse_args(parser, argv, __file__)

    def body() -> None:
        started = time.monotonic()
        models = [m.strip() for m in args.models.split(",") if m.strip()]
        unknown = sorted(set(models) - set(MODELS))
        if unknown or not models:
            raise ValueError(f"--models: unknown {unknown}; choose from {list(MODELS)}")
        train, test = load_image_dataset(args.dataset)
        train = _common.subset(*train, args.train_size)
        test = _common.subset(*test, args.test_size, seed=1)
        for model in models:
            problem = make_problem(model, args.dataset, train, test, args.batch_size)
            result = _common.run_comparison(problem, args, {
                "dataset": args.dataset, "model": model, "train_images": len(train[0]),
                "test_images": len(test[0]), "batch_size": args.batch_size,
                "selection": "learning rate with the lowest final training loss; test metrics at that rate",
            })
            _common.record_wall_time(result, started)
            _common.save_result(result, args.out, problem.name, legend_metric="test_accuracy")

    return _common.run_main(body, args)


if __name__ == "__main__":
    raise SystemExit(main())
