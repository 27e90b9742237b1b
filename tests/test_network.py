import math

import numpy as np
import pytest
from keras import ops

from keras_learned_opt.network import (
    NetworkConfig,
    add_horizon_input,
    apply_network,
    initial_weights,
    progress_feature,
    starting_arrays,
    state_layout,
    weight_shapes,
    zero_state,
)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def numpy_reference(weights, config, grad, state, step, horizon=None):
    """Straightforward per-coordinate loop, written independently of network.py."""
    p = config.log_and_sign_p
    n = grad.shape[0]
    layers = len(config.hidden_sizes)
    updates = np.zeros(n)
    new_state = [np.zeros_like(s, dtype=np.float64) for s in state]
    for row in range(n):
        g = float(grad[row])
        if config.input_features == "log_and_sign":
            if abs(g) >= math.exp(-p):
                x = np.array([math.log(abs(g)) / p, math.copysign(1.0, g)])
            else:
                x = np.array([-1.0, math.exp(p) * g])
        else:
            beta = config.moment_decay
            m = beta * state[2 * layers][row, 0] + (1 - beta) * g
            v = beta * state[2 * layers + 1][row, 0] + (1 - beta) * g * g
            corr = 1 - beta**step
            rms = math.sqrt(v / corr) + 1e-8
            x = np.array([g / rms, m / corr / rms])
            new_state[2 * layers][row, 0] = m
            new_state[2 * layers + 1][row, 0] = v
        if config.horizon_input:
            done = min(max((step - 1) / horizon, 0.0), 1.0) if horizon else 0.0
            x = np.append(x, done)
        if config.input_layer_size:
            z = x @ weights["input/kernel"] + weights["input/bias"]
            x = np.where(z > 0, z, np.exp(np.minimum(z, 0)) - 1)
        for i, units in enumerate(config.hidden_sizes):
            h, c = state[2 * i][row], state[2 * i + 1][row]
            z = np.concatenate([x, h]) @ weights[f"lstm_{i}/kernel"] + weights[f"lstm_{i}/bias"]
            gi, gf, gg, go = (z[k * units : (k + 1) * units] for k in range(4))
            c = _sigmoid(gf) * c + _sigmoid(gi) * np.tanh(gg)
            h = _sigmoid(go) * np.tanh(c)
            new_state[2 * i][row], new_state[2 * i + 1][row] = h, c
            x = h
        out = float(x @ weights["output/kernel"][:, 0] + weights["output/bias"][0])
        if config.output_activation == "tanh":
            out = math.tanh(out)
        updates[row] = out * config.output_scale
    return updates, new_state


@pytest.mark.parametrize(
    "config",
    [
        NetworkConfig(),
        NetworkConfig(log_and_sign_p=5.0, hidden_sizes=(8,)),
        NetworkConfig(input_features="rnnprop", input_layer_size=6, output_activation="tanh",
                      hidden_sizes=(7, 5)),
        NetworkConfig(hidden_sizes=(6, 5), horizon_input=True),
        NetworkConfig(input_features="rnnprop", input_layer_size=4, hidden_sizes=(5,),
                      horizon_input=True),
    ],
)
def test_forward_matches_numpy_reference(config):
    rng = np.random.default_rng(0)
    weights = {k: rng.normal(0, 0.5, v.shape).astype(np.float32)
               for k, v in initial_weights(config).items()}
    # Gradients spanning both LogAndSign branches, both signs, and exact zero.
    grad = np.concatenate([rng.normal(0, 1, 10) * 10.0 ** rng.uniform(-8, 1, 10), [0.0, 1e-12]])
    grad = grad.astype(np.float32)
    state = [rng.normal(0, 0.5, (grad.size, w)).astype(np.float32) for _, w in state_layout(config)]
    if config.input_features == "rnnprop":
        state[-1] = np.abs(state[-1])  # second moment is non-negative
    # The reference is written coordinate-major ([N, width]); the network is feature-major.
    update, new_state = apply_network(weights, config, ops.convert_to_tensor(grad),
                                      [ops.convert_to_tensor(s.T) for s in state], 3, 8)
    ref_update, ref_state = numpy_reference(weights, config, grad, state, 3, 8)
    np.testing.assert_allclose(ops.convert_to_numpy(update), ref_update, rtol=1e-5, atol=1e-6)
    for got, want in zip(new_state, ref_state):
        np.testing.assert_allclose(ops.convert_to_numpy(got).T, want, rtol=1e-5, atol=1e-6)


def test_untrained_network_makes_no_update():
    config = NetworkConfig()
    update, state = apply_network(initial_weights(config), config,
                                  ops.ones((5,)), zero_state(config, 5), 1)
    assert np.all(ops.convert_to_numpy(update) == 0.0)
    assert len(state) == 4 and tuple(state[0].shape) == (20, 5)


def test_shapes_and_layout():
    config = NetworkConfig()
    shapes = weight_shapes(config)
    assert shapes["lstm_0/kernel"] == (22, 80)
    assert shapes["lstm_1/kernel"] == (40, 80)
    assert shapes["output/kernel"] == (20, 1)
    assert config.state_floats_per_parameter == 80
    assert [n for n, _ in state_layout(NetworkConfig(input_features="rnnprop"))][-2:] == ["m", "v"]
    bias = initial_weights(config)["lstm_0/bias"]
    assert np.all(bias[20:40] == 1.0) and np.all(bias[:20] == 0.0)


def test_config_round_trip_and_validation():
    config = NetworkConfig(hidden_sizes=(40,), input_features="rnnprop")
    assert NetworkConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="input_features"):
        NetworkConfig(input_features="adam")
    with pytest.raises(ValueError, match="hidden_sizes"):
        NetworkConfig(hidden_sizes=())
    with pytest.raises(ValueError, match="unknown network configuration keys"):
        NetworkConfig.from_dict({"hidden": [20]})


def _random_weights(config, seed=0):
    rng = np.random.default_rng(seed)
    return {k: rng.normal(0, 0.5, v.shape).astype(np.float32)
            for k, v in initial_weights(config).items()}


@pytest.mark.parametrize("features", ["log_and_sign", "rnnprop"])
def test_antisymmetric_is_half_the_difference_of_two_streams(features):
    """antisymmetric: update = (f(g) - f(-g)) / 2, where the mirrored stream sees
    the negated gradient (and so the negated first moment) with its own LSTM state."""
    plain = NetworkConfig(input_features=features, hidden_sizes=(6, 5))
    config = NetworkConfig(input_features=features, hidden_sizes=(6, 5), antisymmetric=True)
    weights = _random_weights(plain)
    rng = np.random.default_rng(1)
    grad = (rng.normal(0, 1, 9) * 10.0 ** rng.uniform(-6, 0, 9)).astype(np.float32)
    state = [rng.normal(0, 0.5, (9, w)).astype(np.float32) for _, w in state_layout(config)]
    names = [n for n, _ in state_layout(config)]
    if features == "rnnprop":
        state[names.index("v")] = np.abs(state[names.index("v")])
    lstm = len(names) - 4 - (2 if features == "rnnprop" else 0)
    moments = state[lstm : len(names) - 4]
    plus_state = state[:lstm] + moments
    minus_state = state[len(names) - 4 :] + ([-moments[0], moments[1]] if moments else [])
    update, new_state = apply_network(weights, config, ops.convert_to_tensor(grad),
                                      [ops.convert_to_tensor(s.T) for s in state], 4)
    plus, plus_new = numpy_reference(weights, plain, grad, plus_state, 4)
    minus, minus_new = numpy_reference(weights, plain, -grad, minus_state, 4)
    np.testing.assert_allclose(ops.convert_to_numpy(update), 0.5 * (plus - minus), rtol=1e-5, atol=1e-6)
    want = plus_new + minus_new[:lstm]
    for name, got, expected in zip(names, new_state, want):
        np.testing.assert_allclose(ops.convert_to_numpy(got).T, expected, rtol=1e-5, atol=1e-6,
                                   err_msg=name)


def test_antisymmetric_update_is_odd_and_never_drifts():
    config = NetworkConfig(antisymmetric=True)
    weights = _random_weights(config, seed=2)
    rng = np.random.default_rng(3)
    grads = rng.normal(0, 1e-2, (6, 12)).astype(np.float32)
    grads[:, 0] = 0.0  # a coordinate whose gradient is always zero
    runs = []
    for sign in (1.0, -1.0):
        state, updates = zero_state(config, 12), []
        for t, g in enumerate(grads):
            update, state = apply_network(weights, config, ops.convert_to_tensor(sign * g), state, t + 1)
            updates.append(ops.convert_to_numpy(update))
        runs.append(np.array(updates))
    np.testing.assert_allclose(runs[0], -runs[1], atol=1e-7)
    assert np.all(runs[0][:, 0] == 0.0)  # a plain network with these weights would drift
    plain, _ = apply_network(weights, NetworkConfig(), ops.zeros((1,)), zero_state(NetworkConfig(), 1), 1)
    assert abs(float(ops.convert_to_numpy(plain)[0])) > 1e-4


def test_antisymmetric_layout_and_config():
    config = NetworkConfig(antisymmetric=True)
    assert config.state_floats_per_parameter == 160
    assert [n for n, _ in state_layout(config)] == [
        "h0", "c0", "h1", "c1", "h0_mirror", "c0_mirror", "h1_mirror", "c1_mirror"]
    assert weight_shapes(config) == weight_shapes(NetworkConfig())
    assert NetworkConfig.from_dict(config.to_dict()) == config
    assert "antisymmetric" not in NetworkConfig().to_dict()  # older files read the same
    rnnprop = NetworkConfig(input_features="rnnprop", antisymmetric=True)
    assert [n for n, _ in state_layout(rnnprop)][4:6] == ["m", "v"]


def test_progress_feature_is_the_fraction_of_the_run_done():
    def value(step, horizon):
        return ops.convert_to_numpy(progress_feature(step, horizon, 3))

    assert value(1, 100).shape == (1, 3)
    np.testing.assert_allclose(value(1, 100), 0.0)
    np.testing.assert_allclose(value(81, 100), 0.8)
    np.testing.assert_allclose(value(500, 100), 1.0)  # past the stated horizon
    np.testing.assert_allclose(value(81, None), 0.0)  # unknown horizon: a long run's start
    np.testing.assert_allclose(value(81, 0.0), 0.0)


def test_horizon_input_changes_the_update_only_when_its_weights_do():
    plain = NetworkConfig(hidden_sizes=(6, 5), antisymmetric=True)
    weights = _random_weights(plain, seed=4)
    grown, config = add_horizon_input(weights, plain)
    assert config == NetworkConfig(hidden_sizes=(6, 5), antisymmetric=True, horizon_input=True)
    assert grown["lstm_0/kernel"].shape == (3 + 6, 24)
    assert weight_shapes(config)["lstm_0/kernel"] == (3 + 6, 24)
    grad = ops.convert_to_tensor(np.linspace(-1e-2, 1e-2, 7).astype(np.float32))
    before, _ = apply_network(weights, plain, grad, zero_state(plain, 7), 5)
    for horizon in (None, 10, 1000):
        after, _ = apply_network(grown, config, grad, zero_state(config, 7), 5, horizon)
        np.testing.assert_array_equal(ops.convert_to_numpy(after), ops.convert_to_numpy(before))
    grown["lstm_0/kernel"][2] = 1.0  # now the progress feature matters
    early, _ = apply_network(grown, config, grad, zero_state(config, 7), 5, 1000)
    late, _ = apply_network(grown, config, grad, zero_state(config, 7), 5, 5)
    assert np.max(np.abs(ops.convert_to_numpy(early) - ops.convert_to_numpy(late))) > 1e-5
    # still odd in the gradient: progress is the same for both streams
    mirrored, _ = apply_network(grown, config, -grad, zero_state(config, 7), 5, 5)
    np.testing.assert_allclose(ops.convert_to_numpy(mirrored), -ops.convert_to_numpy(late),
                               atol=1e-7)
    with pytest.raises(ValueError, match="already has a horizon input"):
        add_horizon_input(grown, config)


def test_starting_arrays_grow_a_horizon_input_and_refuse_other_changes():
    from keras_learned_opt.errors import ArchitectureMismatchError

    plain = NetworkConfig(input_layer_size=4)
    weights = _random_weights(plain)
    wanted = NetworkConfig(input_layer_size=4, horizon_input=True)
    grown = starting_arrays(weights, plain, wanted, "start.h5")
    assert grown["input/kernel"].shape == (3, 4) and not grown["input/kernel"][2].any()
    np.testing.assert_array_equal(grown["input/kernel"][:2], weights["input/kernel"])
    with pytest.raises(ArchitectureMismatchError, match="start.h5"):
        starting_arrays(weights, plain, NetworkConfig(hidden_sizes=(8,), horizon_input=True),
                        "start.h5")
    with pytest.raises(ArchitectureMismatchError, match="start.h5"):
        starting_arrays(grown, wanted, plain, "start.h5")  # an input cannot be dropped


def test_horizon_input_config():
    config = NetworkConfig(horizon_input=True)
    assert config.feature_count == 3
    assert NetworkConfig.from_dict(config.to_dict()) == config
    assert "horizon_input" not in NetworkConfig().to_dict()  # older files read the same
    assert [n for n, _ in state_layout(config)] == [n for n, _ in state_layout(NetworkConfig())]
