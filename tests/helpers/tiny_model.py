"""The small classifier the subprocess scenarios train (8 inputs, 16 tanh, 3 logits).

Its weights come from numpy, not from a backend's initializers, so every
backend and every strategy starts from the same values.
"""

from __future__ import annotations

import numpy as np


def tiny_classifier():
    """A ``keras.Sequential`` 8-16(tanh)-3 with fixed weights (Keras imported on call,
    after the caller has chosen the backend)."""
    import keras

    model = keras.Sequential([
        keras.Input((8,)),
        keras.layers.Dense(16, activation="tanh", name="hidden"),
        keras.layers.Dense(3, name="head"),
    ])
    rng = np.random.default_rng(1)
    model.set_weights([rng.normal(0, 0.5, tuple(w.shape)).astype("float32") for w in model.weights])
    return model
