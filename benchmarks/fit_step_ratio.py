"""model.fit step time of LearnedOptimizer relative to Adam, on the same batches.

Usage: python benchmarks/fit_step_ratio.py [--tiny] [--xla] [--rounds R] [--steps S]
       [--models mlp,cnn,mobilenet]

Models: the Fashion-MNIST MLP 784-20-10, the small CNN of
``keras_learned_opt.problems.small_cnn`` and
``keras.applications.MobileNetV3Small(weights=None, input_shape=(32, 32, 3),
classes=10)``, trained on synthetic data of the right shapes (speed does not
depend on the data). Each round runs one short ``fit`` per variant, in turn;
a callback times every batch, and the median over rounds is reported.

The *target bound* is what an ideal learned optimizer would cost: Adam's step
plus the network's matmul FLOPs for every parameter at the rate this machine
runs those thin matmuls (measured in the same run). The LSTM's element-wise
work (gates, tanh) comes on top of that in any real implementation.
"""

from __future__ import annotations

import time

import _common  # noqa: F401  (sets sys.path and the backend before keras loads)

import numpy as np
import keras

import keras_learned_opt as klo
from keras_learned_opt.problems import mlp_builder, small_cnn


def mobilenet() -> keras.Model:
    return keras.applications.MobileNetV3Small(weights=None, input_shape=(32, 32, 3), classes=10,
                                               classifier_activation=None)  # logits


MODELS = {
    "MLP 784-20-10": (mlp_builder((20,), "sigmoid"), (784,), 128),
    "small CNN": (small_cnn, (28, 28, 1), 128),
    "MobileNetV3Small 32x32": (mobilenet, (32, 32, 3), 64),
}


class BatchTimer(keras.callbacks.Callback):
    """Seconds of every training batch (the train function runs synchronously)."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []

    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


def fitter(build, optimizer, x, y, batch: int, steps: int, jit: bool):
    """A callable running one ``fit`` epoch of ``steps`` batches; returns the batch times."""
    keras.utils.set_random_seed(0)
    model = build()
    model.compile(optimizer=optimizer, jit_compile=jit,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    data = (x[: batch * steps], y[: batch * steps])

    def run() -> list[float]:
        timer = BatchTimer()
        model.fit(*data, batch_size=batch, epochs=1, shuffle=False, verbose=0, callbacks=[timer])
        return timer.seconds

    run.model = model
    return run


def measure(name: str, weights: str, rounds: int, steps: int, xla: bool) -> list:
    build, shape, batch = MODELS[name]
    rng = np.random.default_rng(0)
    x = rng.random((batch * steps,) + shape, dtype=np.float32)
    y = rng.integers(0, 10, batch * steps).astype("int32")

    def learned(**kw):
        return klo.LearnedOptimizer(weights, learning_rate=1e-3, **kw)

    variants = {
        "Adam": fitter(build, keras.optimizers.Adam(1e-3), x, y, batch, steps, False),
        "learned fused": fitter(build, learned(fused=True), x, y, batch, steps, False),
        "learned fused, jit_network=False": fitter(build, learned(fused=True, jit_network=False),
                                                   x, y, batch, steps, False),
        "learned per-variable": fitter(build, learned(fused=False), x, y, batch, steps, False),
    }
    if xla:
        variants["Adam, XLA"] = fitter(build, keras.optimizers.Adam(1e-3), x, y, batch, steps, True)
        variants["learned fused, XLA"] = fitter(build, learned(fused=True), x, y, batch, steps, True)
    params = variants["Adam"].model.count_params() - sum(
        int(np.prod(v.shape)) for v in variants["Adam"].model.non_trainable_variables)
    n_vars = len(variants["Adam"].model.trainable_variables)
    matmuls = _common.thin_matmul_fn(params)
    samples = {k: [] for k in variants}
    samples["matmuls"] = []
    for fn in list(variants.values()):
        fn()  # trace and compile
    matmuls()
    for _ in range(rounds):
        for k, fn in variants.items():
            # Drop each fit's first batch: it carries the epoch's start-up work.
            samples[k] += fn()[1:]
        start = time.perf_counter()
        matmuls()
        samples["matmuls"].append(time.perf_counter() - start)
    med = {k: float(np.median(v)) for k, v in samples.items()}
    bound = med["Adam"] + med["matmuls"]
    rows = []
    for k in variants:
        base = med["Adam, XLA"] if k.endswith("XLA") else med["Adam"]
        rows.append([name if not rows else "", params if not rows else "",
                     n_vars if not rows else "", k, med[k] * 1e3, med[k] / base])
    rows.append(["", "", "", "target bound: Adam + LSTM matmuls", bound * 1e3, bound / med["Adam"]])
    return rows


def main() -> int:
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--xla", action="store_true", help="add jit_compile=True variants")
    p.add_argument("--steps", type=int, default=None, help="batches per fit (default 12)")
    p.add_argument("--models", default=None, help="comma-separated subset: mlp,cnn,mobilenet")
    args = p.parse_args()
    # --tiny leaves MobileNet out: building and tracing it alone takes a minute.
    names = list(MODELS)[:2] if args.tiny else list(MODELS)
    if args.models:
        keys = {"mlp": names[0], "cnn": names[1], "mobilenet": names[2]}
        names = [keys[k] for k in args.models.split(",")]
    rounds = args.rounds or (1 if args.tiny else 5)
    steps = args.steps or (3 if args.tiny else 12)
    weights = _common.weight_file(args.weights)
    print(_common.machine_note())
    rows = []
    for name in names:
        rows += measure(name, weights, rounds, steps, args.xla)
    print(_common.table(["model", "params", "variables", "optimizer", "ms/step", "/ Adam"], rows))
    print("XLA rows are relative to Adam under XLA; the bound is relative to Adam in graph mode.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
