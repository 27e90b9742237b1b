"""Milliseconds per training step of an MLP with LearnedOptimizer vs Adam, on the current backend.

    for b in tensorflow jax torch; do KERAS_BACKEND=$b python benchmarks/backend_step_time.py; done

The model is 784-100-10 (the shape of the fmnist_mlp problem, 79,510
parameters) on random data, batch 128. Each line is the median of ``--steps``
``train_on_batch`` calls after two warm-up calls, with ``jit_compile`` off
and on (XLA on TensorFlow, jax.jit on JAX, torch.compile on PyTorch).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_learned_opt as klo  # noqa: E402
from keras_learned_opt.network import NetworkConfig, initial_weights  # noqa: E402
from keras_learned_opt.weights import save_weight_file  # noqa: E402


def median_step_ms(optimizer: keras.optimizers.Optimizer, jit: bool, steps: int) -> float:
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((784,)), keras.layers.Dense(100, activation="relu"),
                              keras.layers.Dense(10)])
    model.compile(optimizer=optimizer, jit_compile=jit,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(128, 784)).astype("float32")
    y = rng.integers(0, 10, size=(128,)).astype("int32")
    times = []
    for _ in range(steps + 2):
        tic = time.perf_counter()
        model.train_on_batch(x, y)
        times.append(time.perf_counter() - tic)
    return 1000 * float(np.median(times[2:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        config = NetworkConfig()
        rng = np.random.default_rng(0)
        path = os.path.join(directory, "bench.h5")
        save_weight_file(path, {k: rng.normal(0, 0.3, v.shape).astype(np.float32)
                                for k, v in initial_weights(config).items()},
                         config, provenance={}, description="benchmark")
        for jit in (False, True):
            learned = median_step_ms(klo.LearnedOptimizer(path, 0.01), jit, args.steps)
            adam = median_step_ms(keras.optimizers.Adam(1e-3), jit, args.steps)
            print(f"{keras.backend.backend():>10} jit_compile={jit!s:<5}: "
                  f"learned {learned:7.1f} ms/step, adam {adam:6.1f} ms/step")


if __name__ == "__main__":
    main()
