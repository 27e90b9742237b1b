"""Mixed precision: float16 (with LossScaleOptimizer) and bfloat16 policies, on every backend."""

import keras
import numpy as np
import pytest

import keras_learned_opt as klo


@pytest.fixture
def policy(request):
    keras.mixed_precision.set_global_policy(request.param)
    try:
        yield request.param
    finally:
        keras.mixed_precision.set_global_policy("float32")


def _model():
    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.Input((8,)),
        keras.layers.Dense(16, activation="tanh"),
        keras.layers.Dense(3),
        keras.layers.Activation("linear", dtype="float32"),  # float32 logits for the loss
    ])


def _data(n=256):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 8)).astype("float32")
    y = np.argmax(x @ rng.normal(size=(8, 3)), axis=1).astype("int32")
    return x, y


def _compile(optimizer):
    model = _model()
    model.compile(optimizer=optimizer,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _learned(model):
    optimizer = model.optimizer
    return getattr(optimizer, "inner_optimizer", optimizer)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"], indirect=True)
def test_trains_with_float32_state(policy, sign_descent_file):
    x, y = _data()
    model = _compile(klo.LearnedOptimizer(sign_descent_file, learning_rate=0.05))
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer) == (policy == "mixed_float16")
    losses = model.fit(x, y, batch_size=32, epochs=4, shuffle=False, verbose=0).history["loss"]
    assert np.isfinite(losses).all() and losses[-1] < 0.8 * losses[0], losses
    learned = _learned(model)
    assert model.layers[0].compute_dtype == policy.split("_")[1]
    assert all(v.dtype == "float32" for v in model.trainable_variables)
    assert all(s.dtype == "float32" for slots in learned._state_slots for s in slots)
    assert all(w.dtype == "float32" for w in learned._network_weights.values())
    assert np.abs(keras.ops.convert_to_numpy(learned._state_slots[0][0])).sum() > 0


@pytest.mark.parametrize("policy", ["mixed_float16"], indirect=True)
def test_overflowing_step_is_skipped(policy, random_weight_file):
    """Gradients that overflow float16 leave variables and hidden state as they were.

    LossScaleOptimizer sees the non-finite gradients, skips the inner update (the
    learned optimizer's iteration count does not advance) and halves its scale.
    """
    x, y = _data()
    model = _compile(klo.LearnedOptimizer(random_weight_file, learning_rate=0.01))
    model.train_on_batch(x[:32], y[:32])
    learned = _learned(model)

    def snapshot(variables):
        return [keras.ops.convert_to_numpy(v).copy() for v in variables]

    weights, state = snapshot(model.trainable_variables), snapshot(learned.variables)
    scale = float(keras.ops.convert_to_numpy(model.optimizer.dynamic_scale))
    huge = np.full((32, 8), 1e5, "float32")  # inf once cast to float16 (max 65504)
    model.train_on_batch(huge, y[:32])
    for before, after in zip(weights, snapshot(model.trainable_variables)):
        np.testing.assert_array_equal(before, after)
    for before, after in zip(state, snapshot(learned.variables)):
        np.testing.assert_array_equal(before, after)
    assert float(keras.ops.convert_to_numpy(model.optimizer.dynamic_scale)) == scale / 2
    model.train_on_batch(x[32:64], y[32:64])  # and training carries on
    assert int(keras.ops.convert_to_numpy(learned.iterations)) == 2
    assert all(np.isfinite(w).all() for w in snapshot(model.trainable_variables))
