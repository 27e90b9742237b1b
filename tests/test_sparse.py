"""Sparse gradients: Embedding models train; the rows-only path matches the dense math."""

import keras
import numpy as np
import pytest

import keras_learned_opt as klo

tf_only = pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                             reason="only TensorFlow has IndexedSlices gradients")


def _embedding_model(vocab=50, dim=4, seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((6,), dtype="int32"),
        keras.layers.Embedding(vocab, dim, name="embed"),
        keras.layers.GlobalAveragePooling1D(),
        keras.layers.Dense(1, name="head"),
    ])


def _token_data(n=128, vocab=50, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, vocab // 2, size=(n, 6)).astype("int32")  # rows >= vocab/2 never used
    y = (x % 3 == 0).mean(axis=1, keepdims=True).astype("float32")
    return x, y


def test_embedding_model_trains(sign_descent_file):
    x, y = _token_data()
    model = _embedding_model()
    model.compile(optimizer=klo.LearnedOptimizer(sign_descent_file, learning_rate=0.02), loss="mse")
    losses = model.fit(x, y, batch_size=16, epochs=4, shuffle=False, verbose=0).history["loss"]
    assert losses[-1] < 0.75 * losses[0], losses


def test_rows_never_looked_up_per_backend(random_weight_file):
    """TensorFlow's IndexedSlices take the rows-only path: rows never looked up stay as
    they were. JAX and PyTorch hand over dense gradients, so every row gets the update
    the LSTM makes for a zero gradient (non-zero for these weights)."""
    x, y = _token_data()
    model = _embedding_model()
    unused_before = keras.ops.convert_to_numpy(model.weights[0])[25:].copy()
    model.compile(optimizer=klo.LearnedOptimizer(random_weight_file, learning_rate=0.01), loss="mse")
    model.train_on_batch(x[:16], y[:16])
    unused_after = keras.ops.convert_to_numpy(model.weights[0])[25:]
    rows_only = keras.backend.backend() == "tensorflow"
    assert np.array_equal(unused_after, unused_before) == rows_only


def _slices(indices, values):
    import tensorflow as tf

    return tf.IndexedSlices(tf.constant(values), tf.constant(indices, tf.int32),
                            dense_shape=tf.constant([50, 4]))


@tf_only
def test_rows_update_matches_dense_on_touched_rows(random_weight_file):
    import tensorflow as tf

    rng = np.random.default_rng(1)
    table = rng.normal(size=(50, 4)).astype("float32")
    rows_var, dense_var = keras.Variable(table), keras.Variable(table)
    rows_opt = klo.LearnedOptimizer(random_weight_file, learning_rate=0.1, sparse_updates="rows")
    dense_opt = klo.LearnedOptimizer(random_weight_file, learning_rate=0.1, sparse_updates="dense")
    # Two steps over the same rows (so the second starts from a non-zero state),
    # with duplicate indices, which must be summed as densifying does.
    for indices in ([3, 7, 3, 20], [20, 7, 3, 7]):
        grad = _slices(indices, rng.normal(size=(4, 4)).astype("float32"))
        rows_opt.apply([grad], [rows_var])
        dense_opt.apply([tf.convert_to_tensor(grad)], [dense_var])
    touched = [3, 7, 20]
    untouched = [i for i in range(50) if i not in touched]
    np.testing.assert_allclose(np.asarray(rows_var)[touched], np.asarray(dense_var)[touched],
                               rtol=1e-6, atol=1e-6)
    assert not np.allclose(np.asarray(rows_var)[touched], table[touched])
    np.testing.assert_array_equal(np.asarray(rows_var)[untouched], table[untouched])
    for rows_slot, dense_slot in zip(rows_opt._state_slots[0], dense_opt._state_slots[0]):
        # Slots are feature-major, [width, rows, dim]: the table's rows are axis 1.
        np.testing.assert_allclose(np.asarray(rows_slot)[:, touched],
                                   np.asarray(dense_slot)[:, touched], rtol=1e-6, atol=1e-6)
        assert not np.asarray(rows_slot)[:, untouched].any()
    # The dense path moves untouched rows too (zero-gradient update): the policy differs there.
    assert not np.allclose(np.asarray(dense_var)[untouched], table[untouched])


@tf_only
def test_rows_update_skips_non_finite_gradient(random_weight_file):
    table = np.ones((50, 4), "float32")
    var = keras.Variable(table)
    opt = klo.LearnedOptimizer(random_weight_file, learning_rate=0.1)
    values = np.ones((2, 4), "float32")
    values[1, 2] = np.nan
    opt.apply([_slices([1, 2], values)], [var])
    np.testing.assert_array_equal(np.asarray(var), table)
    assert all(not np.asarray(s).any() for s in opt._state_slots[0])


@tf_only
def test_rows_path_under_xla_matches_graph_mode(random_weight_file):
    x, y = _token_data()
    results = []
    for jit in (False, True):
        model = _embedding_model()
        model.compile(optimizer=klo.LearnedOptimizer(random_weight_file, learning_rate=0.01),
                      loss="mse", jit_compile=jit)
        model.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)
        results.append([np.asarray(w) for w in model.weights])
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, atol=1e-5)
    unused = np.asarray(results[0][0])[25:]
    keras.utils.set_random_seed(0)
    np.testing.assert_array_equal(unused, np.asarray(_embedding_model().weights[0])[25:])


def test_bad_sparse_updates(sign_descent_file):
    with pytest.raises(ValueError, match="sparse_updates"):
        klo.LearnedOptimizer(sign_descent_file, sparse_updates="lazy")
    opt = klo.LearnedOptimizer(sign_descent_file, sparse_updates="dense")
    assert klo.LearnedOptimizer.from_config(opt.get_config()).sparse_updates == "dense"


@tf_only
def test_rows_path_under_loss_scale_optimizer(random_weight_file):
    """mixed_float16 wraps the optimizer in LossScaleOptimizer, whose unscaling keeps
    the IndexedSlices: the rows-only path still applies."""
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = _embedding_model()
        unused_before = np.asarray(model.weights[0])[25:].copy()
        model.compile(optimizer=klo.LearnedOptimizer(random_weight_file, learning_rate=0.01),
                      loss="mse")
        x, y = _token_data()
        model.train_on_batch(x[:16], y[:16])
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    np.testing.assert_array_equal(np.asarray(model.weights[0])[25:], unused_before)
    assert np.asarray(model.optimizer.inner_optimizer._state_slots[0][0])[:, :25].any()
