"""Coordinates per second of the optimizer step alone: fused vs per-variable vs Adam.

Usage: python benchmarks/update_throughput.py [--tiny] [--rounds R]

For models of about 10k, 100k and 1M parameters, each as 8 dense layers (16
variables, large kernels) and as 64 narrow ones (128 variables: many small
tensors, as in real networks with biases and normalization), it times
``optimizer.apply(grads, variables)`` compiled with ``tf.function`` (graph;
the optimizer's default compiles each variable group's update with XLA, and
``jit_network=False`` shows the plain graph) and with ``jit_compile=True``
(the whole step under XLA), interleaved, and
prints coordinates per second and the fraction of the *practical limit*: the
rate at which this machine runs the network's thin matmuls alone
(``[N, in] x [in, 4*hidden]`` forward, every layer), measured in the same run.
"""

from __future__ import annotations

import _common  # noqa: F401  (sets sys.path and the backend before keras loads)

import numpy as np
import tensorflow as tf
import keras

import keras_learned_opt as klo

# (width, layers) of square dense layers giving about 10k, 100k and 1M parameters.
MODELS = {
    "10k": [(35, 8), (12, 64)],
    "100k": [(111, 8), (39, 64)],
    "1M": [(353, 8), (124, 64)],
}
TINY_MODELS = {"1k": [(11, 8)]}  # one small layout: XLA compiles dominate --tiny


def make_variables(width: int, layers: int = 8, seed: int = 0) -> tuple[list, list]:
    """Kernels ``[width, width]`` and biases ``[width]`` of ``layers`` layers, and fixed gradients."""
    rng = np.random.default_rng(seed)
    variables, grads = [], []
    for i in range(layers):
        for shape, tag in (((width, width), "kernel"), ((width,), "bias")):
            variables.append(keras.Variable(rng.standard_normal(shape).astype("float32") * 0.1,
                                            name=f"dense_{i}_{tag}"))
            grads.append(tf.constant(rng.standard_normal(shape).astype("float32") * 1e-3))
    return variables, grads


def step_fn(optimizer: keras.optimizers.Optimizer, variables: list, grads: list, jit: bool):
    """``optimizer.apply`` compiled into one graph (or XLA cluster) per call."""
    optimizer.build(variables)
    compiled = tf.function(lambda: optimizer.apply(grads, variables), jit_compile=jit)
    return lambda: compiled()


def variants(weights: str, variables: list, grads: list, xla: bool = True) -> dict:
    def learned(**kwargs):
        return klo.LearnedOptimizer(weights, learning_rate=1e-3, **kwargs)

    out = {
        "learned fused": step_fn(learned(fused=True), variables, grads, False),
        "learned fused, jit_network=False": step_fn(learned(fused=True, jit_network=False),
                                                    variables, grads, False),
        "learned per-variable": step_fn(learned(fused=False), variables, grads, False),
        "learned fused, bf16 state": step_fn(learned(fused=True, state_dtype="bfloat16"),
                                             variables, grads, False),
        "Adam": step_fn(keras.optimizers.Adam(1e-3), variables, grads, False),
    }
    if xla:
        out.update({
            "learned fused, XLA": step_fn(learned(fused=True), variables, grads, True),
            "Adam, XLA": step_fn(keras.optimizers.Adam(1e-3), variables, grads, True),
        })
    return out


def main() -> int:
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--no-xla", action="store_true", help="skip the jit_compile=True variants")
    p.add_argument("--sizes", default=None, help="comma-separated subset of 10k,100k,1M")
    args = p.parse_args()
    models = TINY_MODELS if args.tiny else MODELS
    if args.sizes:
        models = {k: MODELS[k] for k in args.sizes.split(",")}
    weights = _common.weight_file(args.weights)
    print(_common.machine_note())
    rows = []
    for size, (width, layers) in [(k, m) for k, ms in models.items() for m in ms]:
        variables, grads = make_variables(width, layers)
        n = sum(int(np.prod(v.shape)) for v in variables)
        label = f"{size}: {layers}x{width}, {len(variables)} vars"
        rounds = args.rounds or (1 if args.tiny else (3 if n > 500_000 else 5))
        calls = 1 if args.tiny else max(1, 200_000 // n)
        timed = variants(weights, variables, grads, xla=not args.no_xla)
        timed["thin matmuls (limit)"] = _common.thin_matmul_fn(n)
        seconds = _common.interleaved(timed, rounds=rounds, calls=calls)
        limit = n / seconds["thin matmuls (limit)"]
        fused = seconds["learned fused"]
        for i, (name, s) in enumerate(seconds.items()):
            rows.append([f"{label}, {n} params" if i == 0 else "", name, s * 1e3,
                         n / s / 1e6, n / s / limit, s / fused])
    print(_common.table(
        ["model", "variant", "ms/step", "M coords/s", "of matmul limit", "time / fused"], rows))
    print(f"network matmul FLOPs per coordinate: {_common.lstm_flops_per_coordinate()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
