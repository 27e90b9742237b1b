"""The fused update path (one network call per group of variables) against the per-variable one."""

import keras
import numpy as np
import pytest

import keras_learned_opt as klo
from keras_learned_opt.fused import plan_groups, plan_waves

tensorflow_only = pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                                     reason="TensorFlow-specific behaviour")

# fused options under test: everything in one call, the default grouping, and
# groups so small that variables are split over several calls and some run alone.
FUSED_VARIANTS = {
    "one_call": {"fused": True, "fused_alone_size": 0, "fused_group_size": 0},
    "default": {"fused": True},
    "many_groups": {"fused": True, "fused_group_size": 40},
}


@keras.saving.register_keras_serializable(package="test_fused")
class Scale(keras.layers.Layer):
    """Multiplies by one trainable scalar: a variable of shape ()."""

    def build(self, input_shape):
        self.alpha = self.add_weight(shape=(), initializer="ones", name="alpha")

    def call(self, x):
        return x * self.alpha


def _model(seed=0):
    """Conv kernel [3,3,1,4], matrices, vectors, a scalar and an embedding (sparse grads)."""
    keras.utils.set_random_seed(seed)
    image = keras.Input((6, 6, 1), name="image")
    tokens = keras.Input((3,), dtype="int32", name="tokens")
    x = keras.layers.Conv2D(4, 3, activation="tanh", name="conv")(image)
    x = keras.layers.Dense(5, name="mid")(keras.layers.Flatten()(x))
    e = keras.ops.mean(keras.layers.Embedding(10, 5, name="embed")(tokens), axis=1)
    x = Scale(name="scale")(x + e)
    return keras.Model([image, tokens], keras.layers.Dense(3, name="head")(x))


def _data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    image = rng.normal(size=(n, 6, 6, 1)).astype("float32")
    tokens = rng.integers(0, 10, size=(n, 3)).astype("int32")
    y = rng.integers(0, 3, size=n)
    return (image, tokens), y


def _compiled(weight_file, lr=0.01, jit=False, **options):
    model = _model()
    model.compile(optimizer=klo.LearnedOptimizer(weight_file, learning_rate=lr, **options),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=jit)
    return model


def _steps(model, start, stop, batch=16):
    (image, tokens), y = _data()
    for i in range(start, stop):
        sl = slice((i * batch) % len(y), (i * batch) % len(y) + batch)
        model.train_on_batch([image[sl], tokens[sl]], y[sl])


def _assert_same_state(a, b, atol=1e-6):
    for x, y in zip(a.weights, b.weights):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=atol, err_msg=x.path)
    assert [v.name for v in a.optimizer.variables] == [v.name for v in b.optimizer.variables]
    for x, y in zip(a.optimizer.variables, b.optimizer.variables):
        assert x.shape == y.shape and x.dtype == y.dtype
        np.testing.assert_allclose(np.asarray(x, "float32"), np.asarray(y, "float32"),
                                   atol=atol, err_msg=x.name)


def test_model_has_the_shapes_under_test(random_weight_file):
    shapes = {tuple(v.shape) for v in _model().trainable_variables}
    assert {(), (4,), (3, 3, 1, 4), (64, 5), (10, 5)} <= shapes


@pytest.mark.parametrize("variant", sorted(FUSED_VARIANTS))
def test_fused_matches_per_variable(random_weight_file, variant):
    per_variable = _compiled(random_weight_file, fused=False)
    fused = _compiled(random_weight_file, **FUSED_VARIANTS[variant])
    _steps(per_variable, 0, 5)
    _steps(fused, 0, 5)
    assert fused.optimizer.uses_fused_path and not per_variable.optimizer.uses_fused_path
    _assert_same_state(per_variable, fused)
    # The state really moved (a vacuous comparison of zeros would pass too).
    assert np.abs(np.asarray(fused.optimizer._state_slots[0][0])).sum() > 0


@tensorflow_only
def test_fused_under_xla_matches_per_variable_graph(random_weight_file):
    per_variable = _compiled(random_weight_file, fused=False)
    fused = _compiled(random_weight_file, jit=True, fused=True)
    _steps(per_variable, 0, 4)
    _steps(fused, 0, 4)
    _assert_same_state(per_variable, fused, atol=1e-5)


def test_save_load_fused_continues_like_per_variable(tmp_path, random_weight_file):
    straight = _compiled(random_weight_file, fused=False)
    _steps(straight, 0, 6)
    first = _compiled(random_weight_file, fused=True, fused_alone_size=0)
    _steps(first, 0, 3)
    first.save(tmp_path / "m.keras")
    resumed = keras.models.load_model(tmp_path / "m.keras")
    assert resumed.optimizer.get_config() == first.optimizer.get_config()
    for a, b in zip(first.optimizer.variables, resumed.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    _steps(resumed, 3, 6)
    _assert_same_state(straight, resumed)


def test_checkpoints_move_between_paths(tmp_path, random_weight_file):
    """Same slot names, shapes and order: weights saved by one path load into the other."""
    fused = _compiled(random_weight_file, fused=True)
    _steps(fused, 0, 3)
    fused.save_weights(tmp_path / "w.weights.h5")
    per_variable = _compiled(random_weight_file, fused=False)
    per_variable.optimizer.build(per_variable.trainable_variables)
    per_variable.load_weights(tmp_path / "w.weights.h5")
    _assert_same_state(fused, per_variable, atol=0)
    _steps(fused, 3, 5)
    _steps(per_variable, 3, 5)
    _assert_same_state(fused, per_variable)


def _apply_twice(weight_file, bad_gradient, **options):
    """Two ``apply`` calls on three variables; the second has ``bad_gradient`` for the middle one."""
    variables = [keras.Variable(np.full(shape, 0.5, "float32"), name=f"v{i}")
                 for i, shape in enumerate([(3, 2), (4,), ()])]
    opt = klo.LearnedOptimizer(weight_file, learning_rate=0.1, **options)
    good = [np.full(v.shape, 0.3, "float32") for v in variables]
    opt.apply(good, variables)
    before = [np.asarray(v).copy() for v in variables]
    state = [[np.asarray(s).copy() for s in slots] for slots in opt._state_slots]
    opt.apply([good[0], bad_gradient, good[2]], variables)
    return opt, variables, before, state


@pytest.mark.parametrize("options", [{"fused": False}, *FUSED_VARIANTS.values()],
                         ids=["per_variable", *sorted(FUSED_VARIANTS)])
def test_non_finite_gradient_skips_only_its_variable(random_weight_file, options):
    bad = np.array([0.5, np.nan, 0.1, np.inf], "float32")
    opt, variables, before, state = _apply_twice(random_weight_file, bad, **options)
    reference, ref_vars, _, _ = _apply_twice(random_weight_file, np.full(4, 0.3, "float32"),
                                             fused=False)
    np.testing.assert_array_equal(np.asarray(variables[1]), before[1])
    for old, slot in zip(state[1], opt._state_slots[1]):
        np.testing.assert_array_equal(old, np.asarray(slot))
    for i in (0, 2):  # the others step exactly as they would without the bad variable
        assert not np.array_equal(np.asarray(variables[i]), before[i])
        np.testing.assert_allclose(np.asarray(variables[i]), np.asarray(ref_vars[i]), atol=1e-6)
        for slot, ref in zip(opt._state_slots[i], reference._state_slots[i]):
            np.testing.assert_allclose(np.asarray(slot), np.asarray(ref), atol=1e-6)
    assert all(np.isfinite(np.asarray(v)).all() for v in opt.variables)



@tensorflow_only
@pytest.mark.parametrize("state_dtype", ["float32", "bfloat16"])
def test_compiled_update_writes_what_the_plain_graph_writes(random_weight_file, state_dtype):
    """The XLA group update reads and writes slots and variables itself
    (jit_network.CompiledGroupUpdate); it must store what the plain graph's
    assigns store, including keeping a non-finite variable's old state."""
    bad = np.array([0.5, np.nan, 0.1, np.inf], "float32")
    results = [_apply_twice(random_weight_file, bad, state_dtype=state_dtype, jit_network=jit)
               for jit in (True, False)]
    assert results[0][0].uses_jit_network and not results[1][0].uses_jit_network
    (compiled, compiled_vars, before, state), (plain, plain_vars, _, _) = results
    np.testing.assert_array_equal(np.asarray(compiled_vars[1]), before[1])
    for old, slot in zip(state[1], compiled._state_slots[1]):
        np.testing.assert_array_equal(np.asarray(old, "float32"), np.asarray(slot, "float32"))
    for a, b in zip(compiled_vars, plain_vars):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)
    tolerance = 1e-5 if state_dtype == "float32" else 1e-2  # one bfloat16 rounding may flip
    for a, b in zip(compiled.variables, plain.variables):
        assert a.dtype == b.dtype
        np.testing.assert_allclose(np.asarray(a, "float32"), np.asarray(b, "float32"),
                                   rtol=1e-4, atol=tolerance, err_msg=a.name)

@pytest.mark.parametrize("fused", [False, True])
def test_non_finite_update_skips_variables(random_weight_file, fused):
    var = keras.Variable(np.ones((2, 3), "float32"))
    opt = klo.LearnedOptimizer(random_weight_file, learning_rate=1e30, fused=fused)
    opt.build([var])
    opt._network_weights["output/bias"].assign(np.full((1,), 1e30, "float32"))
    opt.apply([np.full((2, 3), 0.1, "float32")], [var])  # update 1e59 overflows to inf
    np.testing.assert_array_equal(np.asarray(var), np.ones((2, 3)))
    assert all(not np.asarray(s).any() for s in opt._state_slots[0])


@pytest.mark.parametrize("kwargs", [
    {"clipnorm": 0.5}, {"global_clipnorm": 0.5}, {"clipvalue": 0.01}, {"weight_decay": 0.05},
    {"use_ema": True, "ema_overwrite_frequency": 2}, {"gradient_accumulation_steps": 2},
], ids=lambda k: next(iter(k)))
def test_keras_options_agree_between_paths(random_weight_file, kwargs):
    models = [_compiled(random_weight_file, fused=f, **kwargs) for f in (False, True)]
    for model in models:
        _steps(model, 0, 4)
    _assert_same_state(*models)


def test_loss_scale_optimizer_agrees_between_paths(random_weight_file):
    results = []
    for fused in (False, True):
        model = _model()
        inner = klo.LearnedOptimizer(random_weight_file, learning_rate=0.01, fused=fused)
        model.compile(optimizer=keras.optimizers.LossScaleOptimizer(inner),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        _steps(model, 0, 3)
        results.append([np.asarray(w) for w in model.weights])
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("fused", [False, True])
def test_bfloat16_state(tmp_path, random_weight_file, fused):
    model = _compiled(random_weight_file, fused=fused, state_dtype="bfloat16")
    _steps(model, 0, 3)
    slots = [s for group in model.optimizer._state_slots for s in group]
    assert all(s.dtype == "bfloat16" for s in slots)
    assert all(np.asarray(n).dtype == "float32" for n in model.optimizer._network_weights.values())
    assert any(np.abs(np.asarray(s, "float32")).sum() > 0 for s in slots)
    model.save(tmp_path / "m.keras")
    resumed = keras.models.load_model(tmp_path / "m.keras")
    for a, b in zip(model.optimizer.variables, resumed.optimizer.variables):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(np.asarray(a, "float32"), np.asarray(b, "float32"))
    _steps(model, 3, 5)
    _steps(resumed, 3, 5)
    _assert_same_state(model, resumed)


def test_bfloat16_state_agrees_between_paths(random_weight_file):
    """Same math; a float32 rounding difference can flip one bfloat16 rounding (2^-8)."""
    models = [_compiled(random_weight_file, fused=f, state_dtype="bfloat16") for f in (False, True)]
    for model in models:
        _steps(model, 0, 3)
    _assert_same_state(*models, atol=1e-2)


def test_bfloat16_state_tracks_float32_state(random_weight_file):
    models = [_compiled(random_weight_file, state_dtype=d) for d in ("float32", "bfloat16")]
    for model in models:
        _steps(model, 0, 3)
    for a, b in zip(models[0].weights, models[1].weights):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-3)


@tensorflow_only
def test_distribution_strategy_falls_back_to_per_variable(random_weight_file):
    import tensorflow as tf

    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    with strategy.scope():
        model = _compiled(random_weight_file, fused=True)
        assert not model.optimizer.uses_fused_path
    assert not model.optimizer.uses_fused_path  # created under the strategy: stays per-variable
    assert not model.optimizer.uses_jit_network
    # The reference's network runs outside XLA too: XLA's tanh and sigmoid round
    # differently from TensorFlow's kernels (about 1e-5 relative after a few steps).
    reference = _compiled(random_weight_file, fused=True, jit_network=False)
    assert reference.optimizer.uses_fused_path
    _steps(model, 0, 3)
    _steps(reference, 0, 3)
    _assert_same_state(model, reference)


def test_options_in_config_and_validated(random_weight_file):
    opt = klo.LearnedOptimizer(random_weight_file, fused=False, fused_group_size=7,
                               fused_alone_size=3)
    config = opt.get_config()
    assert (config["fused"], config["fused_group_size"], config["fused_alone_size"]) == (False, 7, 3)
    assert klo.LearnedOptimizer.from_config(config).get_config() == config
    assert klo.LearnedOptimizer(random_weight_file).get_config()["fused"] == "auto"
    assert config["jit_network"] == "auto"
    assert klo.LearnedOptimizer.from_config({**config, "jit_network": False}).jit_network is False
    for bad in ({"fused": "yes"}, {"fused_group_size": -1}, {"fused_alone_size": 1.5},
                {"jit_network": "xla"}):
        with pytest.raises(ValueError):
            klo.LearnedOptimizer(random_weight_file, **bad)


@tensorflow_only
def test_auto_is_fused_on_tensorflow(random_weight_file):
    assert klo.LearnedOptimizer(random_weight_file).uses_fused_path


@pytest.mark.parametrize("sizes,max_rows,alone,expected", [
    ([5, 3, 9], 0, 0, [[0, 1, 2]]),
    ([5, 3, 9], 10, 0, [[0, 1], [2]]),
    ([5, 3, 9, 1], 10, 4, [[0], [2], [1, 3]]),
    ([5, 3, 20, 2, 2], 8, 100, [[0, 1], [2], [3, 4]]),  # alone is capped by max_rows
    ([], 8, 4, []),
])
def test_plan_groups(sizes, max_rows, alone, expected):
    groups = plan_groups(sizes, max_rows, alone)
    assert sorted(groups) == sorted(expected)
    assert sorted(i for g in groups for i in g) == list(range(len(sizes)))


@pytest.mark.parametrize("rows,max_rows,expected", [
    ([5, 3, 9], 0, [[0, 1, 2]]),
    ([5, 3, 9, 1], 8, [[0, 1], [2], [3]]),
    ([2, 2, 2], 100, [[0, 1, 2]]),
    ([], 8, []),
])
def test_plan_waves(rows, max_rows, expected):
    assert plan_waves(rows, max_rows) == expected


@pytest.fixture
def antisymmetric_weight_file(tmp_path):
    import dataclasses

    from keras_learned_opt.network import NetworkConfig, initial_weights
    from keras_learned_opt.weights import save_weight_file

    config = NetworkConfig(antisymmetric=True)
    rng = np.random.default_rng(7)
    weights = {k: rng.normal(0, 0.3, v.shape).astype("float32")
               for k, v in initial_weights(dataclasses.replace(config, antisymmetric=False)).items()}
    path = tmp_path / "antisymmetric.h5"
    save_weight_file(path, weights, config, provenance={}, description="random antisymmetric (tests only)")
    return path


def test_antisymmetric_optimizer_paths_agree_and_save(tmp_path, antisymmetric_weight_file):
    """An antisymmetric weight file: 8 state slots per variable, both paths agree
    (sparse rows included), and a saved model continues like a straight run."""
    per_variable = _compiled(antisymmetric_weight_file, fused=False)
    fused = _compiled(antisymmetric_weight_file, fused=True)
    _steps(per_variable, 0, 3)
    _steps(fused, 0, 3)
    assert len(fused.optimizer._state_slots[0]) == 8
    _assert_same_state(per_variable, fused)
    fused.save(tmp_path / "a.keras")
    resumed = keras.models.load_model(tmp_path / "a.keras")
    _steps(fused, 3, 5)
    _steps(resumed, 3, 5)
    _assert_same_state(fused, resumed)
    assert np.abs(np.asarray(fused.optimizer._state_slots[0][4])).sum() > 0  # mirror state moved


@tensorflow_only
@pytest.mark.parametrize("fused", [True, False])
def test_network_under_xla_matches_plain_graph(random_weight_file, fused):
    """jit_network compiles only the network call; the result is the plain graph's
    up to the rounding of XLA's own tanh and sigmoid."""
    compiled = _compiled(random_weight_file, fused=fused, jit_network=True)
    plain = _compiled(random_weight_file, fused=fused, jit_network=False)
    assert compiled.optimizer.uses_jit_network and not plain.optimizer.uses_jit_network
    plain.set_weights(compiled.get_weights())
    _steps(compiled, 0, 4)
    _steps(plain, 0, 4)
    for x, y in zip(compiled.optimizer.variables, plain.optimizer.variables):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-5, err_msg=x.name)
    moved = [np.abs(np.asarray(v)).sum() for v in compiled.optimizer._state_slots[0]]
    assert min(moved) > 0



@pytest.fixture
def horizon_weight_file(tmp_path):
    from keras_learned_opt.network import NetworkConfig, initial_weights
    from keras_learned_opt.weights import save_weight_file

    config = NetworkConfig(antisymmetric=True, horizon_input=True)
    rng = np.random.default_rng(8)
    weights = {k: rng.normal(0, 0.3, v.shape).astype("float32")
               for k, v in initial_weights(config).items()}
    path = tmp_path / "horizon.h5"
    save_weight_file(path, weights, config, provenance={}, description="random horizon (tests only)")
    return path


def test_horizon_file_reads_total_steps_on_every_path(tmp_path, horizon_weight_file):
    """A horizon_input file gets total_steps on the per-variable, fused and XLA
    paths alike (sparse rows included), changes its updates with it, and keeps
    it through model.save."""
    variants = {"per-variable": dict(fused=False, jit_network=False),
                "fused": dict(fused=True, jit_network=False)}
    if keras.backend.backend() == "tensorflow":
        variants["fused, XLA"] = dict(fused=True, jit_network=True)
    told = {name: _compiled(horizon_weight_file, total_steps=6, **options)
            for name, options in variants.items()}
    untold = _compiled(horizon_weight_file, fused=True)
    assert untold.optimizer.uses_horizon and untold.optimizer.total_steps is None
    for model in [*told.values(), untold]:
        _steps(model, 0, 4)
    _assert_same_state(told["per-variable"], told["fused"])
    if "fused, XLA" in told:
        for x, y in zip(told["fused"].optimizer.variables, told["fused, XLA"].optimizer.variables):
            np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-5)
    gap = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
              for a, b in zip(told["fused"].optimizer._state_slots[0],
                              untold.optimizer._state_slots[0]))
    assert gap > 1e-3  # told the horizon, the network moves differently
    model = told["fused"]
    assert model.optimizer.get_config()["total_steps"] == 6
    model.save(tmp_path / "h.keras")
    resumed = keras.models.load_model(tmp_path / "h.keras")
    assert resumed.optimizer.total_steps == 6
    _steps(model, 4, 6)
    _steps(resumed, 4, 6)
    _assert_same_state(model, resumed)


@pytest.mark.parametrize("bad", [0, -5, 2.5, True, "100"])
def test_total_steps_is_validated(random_weight_file, bad):
    with pytest.raises((ValueError, TypeError), match="total_steps"):
        klo.LearnedOptimizer(random_weight_file, total_steps=bad)
    assert not klo.LearnedOptimizer(random_weight_file, total_steps=50).uses_horizon


def test_total_steps_set_after_the_first_step_reaches_the_traced_step(horizon_weight_file):
    """total_steps lives in a variable: set after the step was traced, it is used from
    the next step on (step 1 sees progress 0 either way, so the runs must agree)."""
    told = _compiled(horizon_weight_file, total_steps=6)
    late = _compiled(horizon_weight_file)
    _steps(told, 0, 1)
    _steps(late, 0, 1)
    late.optimizer.total_steps = 6
    _steps(told, 1, 4)
    _steps(late, 1, 4)
    _assert_same_state(told, late)


def test_total_steps_from_fit(horizon_weight_file, random_weight_file):
    (image, tokens), y = _data()  # 64 samples: 4 steps of 16 per epoch
    model = _compiled(horizon_weight_file)
    model.fit([image, tokens], y, batch_size=16, epochs=3, verbose=0,
              callbacks=[klo.TotalStepsFromFit()])
    assert model.optimizer.total_steps == 12
    model.fit([image, tokens], y, batch_size=16, epochs=2, verbose=0,
              callbacks=[klo.TotalStepsFromFit()])
    assert model.optimizer.total_steps == 12 + 8  # one run, continued
    plain = _compiled(random_weight_file)
    plain.fit([image, tokens], y, batch_size=16, epochs=1, verbose=0,
              callbacks=[klo.TotalStepsFromFit()])
    assert plain.optimizer.total_steps is None  # a file that does not read it: untouched
    adam = _model()
    adam.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    with pytest.raises(TypeError, match="LearnedOptimizer"):
        adam.fit([image, tokens], y, batch_size=16, epochs=1, verbose=0,
                 callbacks=[klo.TotalStepsFromFit()])
