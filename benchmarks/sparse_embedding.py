"""Time one training step of an Embedding model: rows-only vs dense sparse updates.

    KERAS_BACKEND=tensorflow python benchmarks/sparse_embedding.py --vocab 100000 --dim 32

Prints milliseconds per ``train_on_batch`` (graph mode, after a warm-up) for
``LearnedOptimizer(sparse_updates="rows")``, ``"dense"`` and Adam, and the
optimizer's state size. The model is Embedding -> mean over tokens -> Dense(1)
on random token batches; only the optimizer differs between runs.
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


def _weight_file(directory: str) -> str:
    """Random 2x20 LogAndSign weights: the cost does not depend on their values."""
    config = NetworkConfig()
    rng = np.random.default_rng(0)
    arrays = {k: rng.normal(0, 0.3, v.shape).astype(np.float32)
              for k, v in initial_weights(config).items()}
    path = os.path.join(directory, "bench.h5")
    save_weight_file(path, arrays, config, provenance={}, description="benchmark")
    return path


def time_steps(optimizer: keras.optimizers.Optimizer, vocab: int, dim: int, batch: int,
               tokens: int, steps: int, jit: bool) -> float:
    """Median milliseconds per training step after two warm-up steps."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((tokens,), dtype="int32"),
        keras.layers.Embedding(vocab, dim),
        keras.layers.GlobalAveragePooling1D(),
        keras.layers.Dense(1),
    ])
    model.compile(optimizer=optimizer, loss="mse", jit_compile=jit)
    rng = np.random.default_rng(0)
    x = rng.integers(0, vocab, size=(steps + 2, batch, tokens)).astype("int32")
    y = rng.normal(size=(steps + 2, batch, 1)).astype("float32")
    times = []
    for i in range(steps + 2):
        tic = time.perf_counter()
        model.train_on_batch(x[i], y[i])
        times.append(time.perf_counter() - tic)
    return 1000 * float(np.median(times[2:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vocab", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=20)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--jit", action="store_true", help="jit_compile=True (XLA on TensorFlow)")
    parser.add_argument("--only", choices=["rows", "dense", "adam"], action="append")
    args = parser.parse_args()
    state_mb = args.vocab * args.dim * NetworkConfig().state_floats_per_parameter * 4 / 2**20
    print(f"backend={keras.backend.backend()} vocab={args.vocab} dim={args.dim} "
          f"batch={args.batch}x{args.tokens} tokens jit={args.jit}; "
          f"learned-optimizer state for the table: {state_mb:.0f} MiB")
    with tempfile.TemporaryDirectory() as directory:
        weights = _weight_file(directory)
        runs = {
            "rows": lambda: klo.LearnedOptimizer(weights, 0.01, sparse_updates="rows"),
            "dense": lambda: klo.LearnedOptimizer(weights, 0.01, sparse_updates="dense"),
            "adam": lambda: keras.optimizers.Adam(1e-3),
        }
        # Only TensorFlow has sparse gradients; elsewhere "rows" would time the dense path again.
        default = list(runs) if keras.backend.backend() == "tensorflow" else ["dense", "adam"]
        for name in args.only or default:
            ms = time_steps(runs[name](), args.vocab, args.dim, args.batch, args.tokens,
                            args.steps, args.jit)
            print(f"{name:>6}: {ms:9.1f} ms/step")


if __name__ == "__main__":
    main()
