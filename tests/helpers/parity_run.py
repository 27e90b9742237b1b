"""Train a fixed model for fixed steps on the current Keras backend; save what it ends with.

Run by tests/test_backends.py in a subprocess per backend (KERAS_BACKEND is
read once, at import)::

    python tests/helpers/parity_run.py WEIGHT_FILE OUT_DIR [--jit] [--resume MODEL.keras]

Everything that could differ between backends is pinned: initial weights come
from numpy (not the backends' initializers) and so do the batches. The run
takes ``STEPS`` steps with a save and reload of the model (hidden state
included) after ``SAVE_AT``; with ``--resume`` it instead loads a model saved
by any backend and takes the remaining steps. ``OUT_DIR/result.npz`` holds the
model weights (``w0, w1, ...``) and the first variable's state slots
(``s0, s1, ...``); ``OUT_DIR/mid.keras`` is the model saved after ``SAVE_AT``.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_learned_opt as klo  # noqa: E402
from tiny_model import tiny_classifier  # noqa: E402  (tests/helpers is sys.path[0])

STEPS = 6
SAVE_AT = 3


def batches() -> tuple[np.ndarray, np.ndarray]:
    """``x [STEPS, 32, 8]`` float32 and ``y [STEPS, 32]`` int32 labels in 0..2."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(STEPS, 32, 8)).astype("float32")
    y = rng.integers(0, 3, size=(STEPS, 32)).astype("int32")
    return x, y


def build(weight_file: str, jit: bool) -> keras.Model:
    model = tiny_classifier()
    model.compile(
        optimizer=klo.LearnedOptimizer(weight_file, learning_rate=0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit,
    )
    return model


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("weight_file")
    parser.add_argument("out_dir")
    parser.add_argument("--jit", action="store_true")
    parser.add_argument("--resume", default=None)
    args = parser.parse_args()
    x, y = batches()
    if args.resume:
        model = keras.models.load_model(args.resume)
    else:
        model = build(args.weight_file, args.jit)
        for i in range(SAVE_AT):
            model.train_on_batch(x[i], y[i])
        mid = os.path.join(args.out_dir, "mid.keras")
        model.save(mid)
        model = keras.models.load_model(mid)
    for i in range(SAVE_AT, STEPS):
        model.train_on_batch(x[i], y[i])
    arrays = {f"w{i}": np.asarray(keras.ops.convert_to_numpy(w)) for i, w in enumerate(model.weights)}
    for i, slot in enumerate(model.optimizer._state_slots[0]):
        arrays[f"s{i}"] = np.asarray(keras.ops.convert_to_numpy(slot))
    np.savez(os.path.join(args.out_dir, "result.npz"), **arrays)
    print("backend", keras.backend.backend(), "done")


if __name__ == "__main__":
    main()
