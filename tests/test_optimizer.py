import json
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import keras_learned_opt as klo
from keras_learned_opt.errors import ArchitectureMismatchError


def _data(n=256, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8)).astype("float32")
    w = rng.normal(size=(8, 3)).astype("float32")
    y = np.argmax(x @ w, axis=1)
    return x, y


def _model(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((8,)),
        keras.layers.Dense(16, activation="tanh", name="hidden"),
        keras.layers.Dense(3, name="head"),
    ])


def _compile(model, optimizer, **kwargs):
    model.compile(optimizer=optimizer,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), **kwargs)
    return model


def test_fit_decreases_loss(sign_descent_file):
    x, y = _data()
    model = _compile(_model(), klo.LearnedOptimizer(sign_descent_file, learning_rate=0.05))
    history = model.fit(x, y, batch_size=32, epochs=5, shuffle=False, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < 0.6 * losses[0], losses


def test_slots_shape_dtype_and_names(sign_descent_file):
    model = _compile(_model(), klo.LearnedOptimizer(sign_descent_file))
    model.optimizer.build(model.trainable_variables)
    names = [v.name for v in model.optimizer.variables]
    assert len(names) == len(set(names))
    kernel_slots = model.optimizer._state_slots[0]
    assert [tuple(s.shape) for s in kernel_slots] == [(20, 8, 16)] * 4
    assert all(s.dtype == "float32" for s in kernel_slots)
    paths = [v.path.replace("/", "_") for v in model.trainable_variables]
    assert f"{paths[0]}_h0" in names and f"{paths[-1]}_c1" in names


def test_mixed_dtype_model_keeps_float32_state(sign_descent_file):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3, dtype="float16")])
    model.compile(optimizer=klo.LearnedOptimizer(sign_descent_file, learning_rate=0.05), loss="mse")
    x, _ = _data()
    model.fit(x, np.zeros((len(x), 3), "float32"), epochs=1, verbose=0)
    assert all(s.dtype == "float32" for s in model.optimizer._state_slots[0])
    assert model.weights[0].dtype == "float16"


def test_get_config_round_trip(sign_descent_file):
    opt = klo.LearnedOptimizer(sign_descent_file, learning_rate=0.3, clipnorm=1.0, name="lopt")
    config = opt.get_config()
    json.dumps(config)
    clone = klo.LearnedOptimizer.from_config(config)
    assert clone.get_config() == config
    assert keras.optimizers.deserialize(keras.optimizers.serialize(opt)).get_config() == config


def test_config_disagreeing_with_file_is_refused(sign_descent_file):
    config = klo.LearnedOptimizer(sign_descent_file).get_config()
    config["network_config"]["hidden_sizes"] = [40, 40]
    with pytest.raises(ArchitectureMismatchError, match="saved optimizer expects"):
        klo.LearnedOptimizer.from_config(config)


def _fit_steps(model, x, y, steps, batch=32):
    for i in range(steps):
        sl = slice((i * batch) % len(x), (i * batch) % len(x) + batch)
        model.train_on_batch(x[sl], y[sl])


def test_save_load_continuation_is_exact(tmp_path, random_weight_file):
    x, y = _data()
    straight = _compile(_model(), klo.LearnedOptimizer(random_weight_file, learning_rate=0.01))
    _fit_steps(straight, x, y, 8)

    first = _compile(_model(), klo.LearnedOptimizer(random_weight_file, learning_rate=0.01))
    _fit_steps(first, x, y, 4)
    first.save(tmp_path / "m.keras")
    resumed = keras.models.load_model(tmp_path / "m.keras")
    assert isinstance(resumed.optimizer, klo.LearnedOptimizer)
    for a, b in zip(first.optimizer.variables, resumed.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for i in range(4, 8):
        sl = slice(i * 32, i * 32 + 32)
        resumed.train_on_batch(x[sl], y[sl])
    for a, b in zip(straight.weights, resumed.weights):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
    assert np.abs(np.asarray(resumed.optimizer._state_slots[0][0])).sum() > 0


@pytest.mark.slow
def test_saved_model_loads_without_weight_file(tmp_path, random_weight_file):
    """A .keras file is self-contained: the network travels with the optimizer state."""
    x, y = _data()
    model = _compile(_model(), klo.LearnedOptimizer(random_weight_file, learning_rate=0.01))
    _fit_steps(model, x, y, 3)
    model.save(tmp_path / "m.keras")
    np.save(tmp_path / "x.npy", x[:32])
    np.save(tmp_path / "y.npy", y[:32])
    model.train_on_batch(x[:32], y[:32])
    np.save(tmp_path / "expected.npy", np.asarray(model.weights[0]))
    random_weight_file.unlink()
    script = textwrap.dedent(f"""
        import numpy as np, keras
        import keras_learned_opt
        model = keras.models.load_model(r"{tmp_path / 'm.keras'}")
        model.train_on_batch(np.load(r"{tmp_path / 'x.npy'}"), np.load(r"{tmp_path / 'y.npy'}"))
        np.testing.assert_allclose(np.asarray(model.weights[0]),
                                   np.load(r"{tmp_path / 'expected.npy'}"), atol=1e-6)
        print("OK")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0 and "OK" in result.stdout, result.stderr[-3000:]


def test_recreated_without_file_refuses_to_step_before_restore(tmp_path, sign_descent_file):
    config = klo.LearnedOptimizer(sign_descent_file).get_config()
    config["weights"] = str(tmp_path / "gone.h5")
    opt = klo.LearnedOptimizer.from_config(config)
    var = keras.Variable(np.ones(3, "float32"))
    with pytest.raises(RuntimeError, match="never loaded"):
        opt.apply([np.ones(3, "float32")], [var])


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="tf.train.Checkpoint is TensorFlow's")
def test_tf_checkpoint_restores_hidden_state(tmp_path, random_weight_file):
    import tensorflow as tf

    x, y = _data()
    model = _compile(_model(), klo.LearnedOptimizer(random_weight_file, learning_rate=0.01))
    _fit_steps(model, x, y, 3)
    checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer)
    path = checkpoint.write(str(tmp_path / "ckpt"))
    saved = [np.asarray(v).copy() for v in model.optimizer.variables]
    _fit_steps(model, x, y, 2)
    checkpoint.read(path).assert_consumed()
    for a, b in zip(saved, model.optimizer.variables):
        np.testing.assert_array_equal(a, np.asarray(b))


def test_backup_and_restore_resumes_state(tmp_path, random_weight_file):
    x, y = _data()

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise RuntimeError("interrupted")

    def run(callbacks):
        model = _compile(_model(), klo.LearnedOptimizer(random_weight_file, learning_rate=0.01))
        model.fit(x, y, batch_size=64, epochs=4, shuffle=False, verbose=0, callbacks=callbacks)
        return model

    straight = run([])
    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    with pytest.raises(RuntimeError, match="interrupted"):
        run([backup, Interrupt()])
    resumed = run([keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))])
    for a, b in zip(straight.weights, resumed.weights):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)


def test_jit_compile_matches_graph_mode(random_weight_file):
    x, y = _data()
    results = []
    for jit in (False, True):
        model = _compile(_model(), klo.LearnedOptimizer(random_weight_file, learning_rate=0.01),
                         jit_compile=jit)
        model.fit(x, y, batch_size=64, epochs=1, shuffle=False, verbose=0)
        results.append([np.asarray(w) for w in model.weights])
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_standard_keras_arguments_work(sign_descent_file):
    x, y = _data()
    schedule = keras.optimizers.schedules.ExponentialDecay(0.05, decay_steps=4, decay_rate=0.5)
    for kwargs in ({"clipnorm": 1.0}, {"global_clipnorm": 1.0}, {"clipvalue": 0.1},
                   {"weight_decay": 0.01}, {"use_ema": True}, {"gradient_accumulation_steps": 2},
                   {"learning_rate": schedule}):
        kwargs.setdefault("learning_rate", 0.05)
        model = _compile(_model(), klo.LearnedOptimizer(sign_descent_file, **kwargs))
        history = model.fit(x, y, batch_size=32, epochs=2, verbose=0)
        assert np.isfinite(history.history["loss"]).all(), kwargs
        clone = klo.LearnedOptimizer.from_config(model.optimizer.get_config())
        assert clone.get_config() == model.optimizer.get_config()


def test_learning_rate_scales_update(sign_descent_file):
    deltas = []
    for lr in (0.1, 0.2):
        var = keras.Variable(np.zeros(4, "float32"))
        opt = klo.LearnedOptimizer(sign_descent_file, learning_rate=lr)
        opt.apply([np.array([1.0, -1.0, 0.5, -2.0], "float32")], [var])
        deltas.append(np.asarray(var))
    np.testing.assert_allclose(deltas[1], 2 * deltas[0], rtol=1e-6)
    assert np.all(np.sign(deltas[0]) == [-1, 1, -1, 1])


def test_non_finite_gradient_leaves_variable_and_state_untouched(random_weight_file):
    good = keras.Variable(np.ones(3, "float32"))
    bad = keras.Variable(np.ones(3, "float32"))
    opt = klo.LearnedOptimizer(random_weight_file, learning_rate=0.1)
    opt.apply([np.full(3, 0.5, "float32"), np.full(3, 0.5, "float32")], [good, bad])
    bad_before = np.asarray(bad).copy()
    bad_state = [np.asarray(s).copy() for s in opt._state_slots[1]]
    good_before = np.asarray(good).copy()
    opt.apply([np.full(3, 0.5, "float32"), np.array([0.5, np.nan, np.inf], "float32")], [good, bad])
    np.testing.assert_array_equal(np.asarray(bad), bad_before)
    for before, slot in zip(bad_state, opt._state_slots[1]):
        np.testing.assert_array_equal(before, np.asarray(slot))
    assert not np.array_equal(np.asarray(good), good_before)
    assert all(np.isfinite(np.asarray(v)).all() for v in opt.variables)


def test_integer_variable_is_refused(sign_descent_file):
    # trainable=False: PyTorch refuses integer tensors that require gradients.
    var = keras.Variable(np.zeros(3, "int32"), dtype="int32", trainable=False)
    opt = klo.LearnedOptimizer(sign_descent_file)
    with pytest.raises(TypeError, match="floating-point.*int32"):
        opt.build([var])


def test_bad_state_dtype(sign_descent_file):
    with pytest.raises(ValueError, match="state_dtype"):
        klo.LearnedOptimizer(sign_descent_file, state_dtype="float16")


def test_jit_network_is_for_tensorflow_graphs(sign_descent_file):
    if keras.backend.backend() == "tensorflow":
        assert klo.LearnedOptimizer(sign_descent_file).uses_jit_network  # "auto"
        assert klo.LearnedOptimizer(sign_descent_file, jit_network=True).uses_jit_network
    else:  # jax.jit already compiles the whole step
        assert not klo.LearnedOptimizer(sign_descent_file).uses_jit_network
        with pytest.raises(ValueError, match="backend is not supported"):
            klo.LearnedOptimizer(sign_descent_file, jit_network=True)


def test_state_saved_coordinate_major_by_version_0_1_loads(sign_descent_file):
    """0.1 stored slots as variable.shape + (units,); they are moved to today's layout,
    including those of a variable whose shape reads the same both ways (a 20-unit bias)."""
    inputs = keras.Input((8,))
    hidden = keras.layers.Dense(20, name="square_bias")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3)(hidden))
    model = _compile(model, klo.LearnedOptimizer(sign_descent_file))
    x, y = _data()
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    optimizer = model.optimizer
    saved = {str(i): np.asarray(v) for i, v in enumerate(optimizer.variables)}
    slots = [slot for group in optimizer._state_slots for slot in group]
    index = {id(v): i for i, v in enumerate(optimizer.variables)}
    old_store = dict(saved)
    for slot in slots:
        old_store[str(index[id(slot)])] = np.moveaxis(saved[str(index[id(slot)])], 0, -1)
    for slot in slots:
        slot.assign(np.zeros(slot.shape, "float32"))
    optimizer.load_own_variables(old_store)
    for i, variable in enumerate(optimizer.variables):
        np.testing.assert_array_equal(np.asarray(variable), saved[str(i)])
    assert any(np.abs(saved[str(index[id(s)])]).sum() > 0 for s in slots)
