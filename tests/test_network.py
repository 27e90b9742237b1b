import math

import numpy as np
import pytest
from keras import ops

from keras_learned_opt.network import (
    NetworkConfig,
    apply_network,
    initial_weights,
    state_layout,
    weight_shapes,
    zero_state,
)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def numpy_reference(weights, config, grad, state, step):
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
                                      [ops.convert_to_tensor(s.T) for s in state], 3)
    ref_update, ref_state = numpy_reference(weights, config, grad, state, 3)
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
