"""The update network: a coordinate-wise LSTM shared by every scalar parameter.

This module holds the only copy of the update math in the project. It is a
pure function of (weights, gradient, state) written in ``keras.ops``, so the
same code runs inside ``LearnedOptimizer`` (weights are constant optimizer
variables) and inside the meta-trainer (weights are ``tf.Variable`` objects
being trained under a ``tf.GradientTape``).

Shapes: every scalar parameter is one *column* of a batch of ``N`` columns.
``gradient`` is ``[N]``; each state tensor is ``[width, N]`` (see
``state_layout``); the returned update is ``[N]`` and is *added* to the
parameters (Andrychowicz et al. 2016, eq. 1) after multiplication by the
optimizer's learning rate.

Why feature-major (``[width, N]``, not ``[N, width]``): the element-wise work
of the LSTM (gate nonlinearities, products) costs several times its matmuls,
and in this layout each gate is a contiguous block of rows, so splitting the
gates copies nothing and every element-wise op streams through memory.
Measured on one CPU core, 1M coordinates, 2x20: 215 ms per call against 326 ms
for ``[N, width]`` in a TensorFlow graph, 139 ms against 240 ms under XLA
(``benchmarks/README.md``).
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, Mapping, Sequence

import numpy as np
from keras import ops

INPUT_FEATURES = ("log_and_sign", "rnnprop")
OUTPUT_ACTIVATIONS = ("linear", "tanh")


@dataclasses.dataclass(frozen=True)
class NetworkConfig:
    """Architecture and input preprocessing of the update network.

    Attributes:
        hidden_sizes: units of each stacked LSTM layer (paper: (20, 20)).
        input_features: ``"log_and_sign"`` (paper appendix A) or ``"rnnprop"``
            (Lv et al. 2017: gradient and momentum divided by the RMS of the
            gradient, running moments with decay ``moment_decay``).
        log_and_sign_p: the ``p`` of LogAndSign (paper 10, DeepMind's code 5).
        moment_decay: decay of the running moments used by ``"rnnprop"``.
        input_layer_size: units of an ELU dense layer before the LSTM (RNNprop
            uses 20); 0 feeds the features straight into the LSTM.
        output_activation: ``"linear"`` (paper) or ``"tanh"`` (bounded).
        output_scale: the network output is multiplied by this constant.
        antisymmetric: make the update an odd function of the gradient
            history, ``update(-g) = -update(g)``, by running the network on
            the gradient and on its negation (a mirrored state stream) and
            taking half the difference. A plain network can learn a constant
            drift (an update that does not average to zero when the gradient
            does); harmless, even useful, within its training horizon, it
            accumulates over longer runs. Costs twice the compute and state.
        horizon_input: give the network a third input feature, the fraction of
            the run already done, ``(step - 1) / horizon`` clipped to [0, 1],
            where ``horizon`` is the run's length in steps as the user states it
            (``LearnedOptimizer(total_steps=...)``); 0 when it is not stated.
            A learned schedule: VeLO (Metz et al. 2022) also conditions on the
            training horizon. It costs one more row in the first matmul.
    """

    hidden_sizes: tuple[int, ...] = (20, 20)
    input_features: str = "log_and_sign"
    log_and_sign_p: float = 10.0
    moment_decay: float = 0.95
    input_layer_size: int = 0
    output_activation: str = "linear"
    output_scale: float = 0.1
    antisymmetric: bool = False
    horizon_input: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden_sizes", tuple(int(h) for h in self.hidden_sizes))
        if not self.hidden_sizes or min(self.hidden_sizes) < 1:
            raise ValueError(f"hidden_sizes must be positive integers, got {self.hidden_sizes}")
        if self.input_features not in INPUT_FEATURES:
            raise ValueError(
                f"input_features must be one of {INPUT_FEATURES}, got {self.input_features!r}"
            )
        if self.output_activation not in OUTPUT_ACTIVATIONS:
            raise ValueError(
                f"output_activation must be one of {OUTPUT_ACTIVATIONS}, "
                f"got {self.output_activation!r}"
            )
        if self.log_and_sign_p <= 0:
            raise ValueError(f"log_and_sign_p must be > 0, got {self.log_and_sign_p}")
        if not 0.0 <= self.moment_decay < 1.0:
            raise ValueError(f"moment_decay must be in [0, 1), got {self.moment_decay}")
        if self.input_layer_size < 0:
            raise ValueError(f"input_layer_size must be >= 0, got {self.input_layer_size}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["hidden_sizes"] = list(self.hidden_sizes)
        for option in ("antisymmetric", "horizon_input"):
            if not d[option]:
                d.pop(option)  # files written before the option existed read the same
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "NetworkConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown network configuration keys: {sorted(unknown)}")
        return cls(**d)

    @property
    def feature_count(self) -> int:
        return 3 if self.horizon_input else 2

    @property
    def state_floats_per_parameter(self) -> int:
        return sum(width for _, width in state_layout(self))


def state_layout(config: NetworkConfig) -> list[tuple[str, int]]:
    """Names and widths of the per-coordinate state tensors, in order.

    Each LSTM layer ``i`` has a hidden state ``h{i}`` and a cell state ``c{i}``;
    ``"rnnprop"`` inputs add the running first and second moments ``m``, ``v``;
    ``antisymmetric`` adds the LSTM states of the mirrored stream (``h{i}_mirror``,
    ``c{i}_mirror``), which sees the negated gradient.
    """
    lstm = []
    for i, units in enumerate(config.hidden_sizes):
        lstm += [(f"h{i}", units), (f"c{i}", units)]
    layout = list(lstm)
    if config.input_features == "rnnprop":
        layout += [("m", 1), ("v", 1)]
    if config.antisymmetric:
        layout += [(f"{name}_mirror", width) for name, width in lstm]
    return layout


def weight_shapes(config: NetworkConfig) -> dict[str, tuple[int, ...]]:
    """The name and shape of every trainable array of the network."""
    shapes: dict[str, tuple[int, ...]] = {}
    width = config.feature_count
    if config.input_layer_size:
        shapes["input/kernel"] = (width, config.input_layer_size)
        shapes["input/bias"] = (config.input_layer_size,)
        width = config.input_layer_size
    for i, units in enumerate(config.hidden_sizes):
        # One fused kernel for [x, h] -> gates (i, f, g, o): one matmul per layer.
        shapes[f"lstm_{i}/kernel"] = (width + units, 4 * units)
        shapes[f"lstm_{i}/bias"] = (4 * units,)
        width = units
    shapes["output/kernel"] = (width, 1)
    shapes["output/bias"] = (1,)
    return shapes


def initial_weights(config: NetworkConfig, seed: int = 0) -> dict[str, np.ndarray]:
    """Fresh weights for meta-training (float32 numpy arrays).

    Kernels are Glorot-uniform, the LSTM forget-gate bias is +1 so that state is
    remembered from the start, and the output layer is zero so the untrained
    optimizer makes no update (a stable starting point for meta-training).
    """
    rng = np.random.default_rng(seed)
    weights = {}
    for name, shape in weight_shapes(config).items():
        if name.startswith("output/"):
            value = np.zeros(shape)
        elif name.endswith("/kernel"):
            limit = math.sqrt(6.0 / (shape[0] + shape[1]))
            value = rng.uniform(-limit, limit, size=shape)
        else:
            value = np.zeros(shape)
            if name.startswith("lstm_"):
                units = shape[0] // 4
                value[units : 2 * units] = 1.0
        weights[name] = value.astype(np.float32)
    return weights


def input_features(
    config: NetworkConfig, gradient, moments: Sequence | None, step
) -> tuple[Any, list]:
    """Per-coordinate input features ``[2, N]`` and the updated moment state.

    ``moments`` is ``[m, v]`` (each ``[1, N]``) for ``"rnnprop"`` and ``None``
    otherwise; ``step`` is the 1-based step count used for bias correction.
    """
    g = ops.expand_dims(gradient, 0)
    if config.input_features == "log_and_sign":
        # Paper appendix A, branch-free and exact: for |g| >= e^-p the features
        # are (log|g|/p, sign g), below it (-1, e^p g).
        p = config.log_and_sign_p
        magnitude = ops.log(ops.maximum(ops.abs(g), math.exp(-p))) / p
        direction = ops.clip(g * math.exp(p), -1.0, 1.0)
        return ops.concatenate([magnitude, direction], axis=0), []
    beta = config.moment_decay
    m, v = moments
    m = beta * m + (1.0 - beta) * g
    v = beta * v + (1.0 - beta) * ops.square(g)
    correction = 1.0 - ops.power(ops.cast(beta, "float32"), ops.cast(step, "float32"))
    rms = ops.sqrt(v / correction) + 1e-8
    features = ops.concatenate([g / rms, (m / correction) / rms], axis=0)
    return features, [m, v]


def progress_feature(step, horizon, columns) -> Any:
    """The fraction of the run done before this step, ``[1, columns]``.

    ``(step - 1) / horizon`` clipped to [0, 1]; 0 everywhere when ``horizon``
    is ``None`` or not positive (an unstated horizon reads as the start of a
    long run). ``step`` is 1-based and may be a tensor; so may ``horizon``.
    """
    if horizon is None:
        return ops.zeros((1, columns), dtype="float32")
    horizon = ops.cast(horizon, "float32")
    done = ops.cast(step, "float32") - 1.0
    fraction = ops.where(horizon > 0, ops.clip(done / ops.maximum(horizon, 1.0), 0.0, 1.0), 0.0)
    return ops.broadcast_to(ops.reshape(fraction, (1, 1)), (1, columns))


def add_horizon_input(weights: Mapping[str, np.ndarray],
                      config: NetworkConfig) -> tuple[dict[str, np.ndarray], NetworkConfig]:
    """The same network with a ``horizon_input`` feature whose weights are zero.

    It computes exactly what ``weights`` did, whatever the horizon, so it is a
    starting point for learning what to do with the new input.
    """
    if config.horizon_input:
        raise ValueError("the network already has a horizon input")
    new_config = dataclasses.replace(config, horizon_input=True)
    first = "input/kernel" if config.input_layer_size else "lstm_0/kernel"
    new = {name: np.asarray(value, np.float32) for name, value in weights.items()}
    kernel = new[first]
    row = config.feature_count  # the new feature follows the old ones
    new[first] = np.concatenate(
        [kernel[:row], np.zeros((1, kernel.shape[1]), np.float32), kernel[row:]], axis=0)
    return new, new_config


def starting_arrays(arrays: Mapping[str, np.ndarray], config: NetworkConfig,
                    wanted: NetworkConfig, source: str) -> dict[str, np.ndarray]:
    """Weights of a network ``config`` (from ``source``) as a start for training ``wanted``.

    Allowed differences: ``antisymmetric`` (the wrapper uses the same weights)
    and a ``horizon_input`` that ``wanted`` adds (``add_horizon_input``).

    Raises:
        ArchitectureMismatchError: any other difference.
    """
    from keras_learned_opt.errors import ArchitectureMismatchError

    arrays = {name: np.asarray(value, np.float32) for name, value in arrays.items()}
    if wanted.horizon_input and not config.horizon_input:
        arrays, config = add_horizon_input(arrays, config)
    if dataclasses.replace(config, antisymmetric=wanted.antisymmetric) != wanted:
        raise ArchitectureMismatchError(
            f"--init-from {source} holds {config}, but this run trains {wanted}")
    return arrays


def dense_columns(kernel, bias, x):
    """``kernel [in, out]`` applied to every column of ``x [in, N]``: ``[out, N]``."""
    return ops.matmul(ops.transpose(kernel), x) + ops.expand_dims(bias, -1)


def lstm_cell(kernel, bias, x, h, c) -> tuple[Any, Any]:
    """One LSTM layer for all coordinates: ``x [in, N]``, ``h, c [units, N]``."""
    z = dense_columns(kernel, bias, ops.concatenate([x, h], axis=0))
    i, f, g, o = ops.split(z, 4, axis=0)
    c = ops.sigmoid(f) * c + ops.sigmoid(i) * ops.tanh(g)
    h = ops.sigmoid(o) * ops.tanh(c)
    return h, c


def apply_network(
    weights: Mapping[str, Any],
    config: NetworkConfig,
    gradient,
    state: Sequence,
    step,
    horizon=None,
) -> tuple[Any, list]:
    """Run the update network on ``N`` coordinates.

    Args:
        weights: arrays named as in ``weight_shapes`` (tensors or variables).
        config: the architecture.
        gradient: ``[N]`` float32 gradient, one entry per coordinate.
        state: tensors in the order of ``state_layout``, each ``[width, N]``.
        step: 1-based optimizer step (scalar), used by moment bias correction
            and by the progress feature.
        horizon: the run's length in steps (scalar; ``None`` or 0: unknown),
            read only by networks with ``horizon_input``.

    Returns:
        ``(update [N], new_state)``: the update to *add* to the parameters
        (before the learning rate), and the new state in ``state_layout`` order.
    """
    layers = len(config.hidden_sizes)
    moment_count = 2 if config.input_features == "rnnprop" else 0
    lstm_state = list(state[: 2 * layers])
    moments = state[2 * layers : 2 * layers + moment_count]
    x, new_moments = input_features(config, gradient, moments or None, step)
    columns = gradient.shape[0] if gradient.shape[0] is not None else ops.shape(gradient)[0]
    if config.horizon_input:
        x = ops.concatenate([x, progress_feature(step, horizon, columns)], axis=0)
    if config.antisymmetric:
        # The mirrored stream's features are those of -g (and of -m): LogAndSign's
        # magnitude is even in g and its direction odd; both RNNprop features are
        # odd; progress is the same for both streams.
        parity = [1.0, -1.0] if config.input_features == "log_and_sign" else [-1.0, -1.0]
        parity += [1.0] if config.horizon_input else []
        x = ops.concatenate([x, x * np.asarray(parity, "float32")[:, None]], axis=1)
        mirror = state[2 * layers + moment_count :]
        lstm_state = [ops.concatenate([s, m], axis=1) for s, m in zip(lstm_state, mirror)]
    if config.input_layer_size:
        x = ops.elu(dense_columns(weights["input/kernel"], weights["input/bias"], x))
    new_state = []
    for i in range(layers):
        h, c = lstm_cell(
            weights[f"lstm_{i}/kernel"], weights[f"lstm_{i}/bias"], x,
            lstm_state[2 * i], lstm_state[2 * i + 1],
        )
        new_state += [h, c]
        x = h
    out = dense_columns(weights["output/kernel"], weights["output/bias"], x)
    if config.output_activation == "tanh":
        out = ops.tanh(out)
    update = ops.reshape(out, (-1,)) * config.output_scale
    if config.antisymmetric:
        update = 0.5 * (update[:columns] - update[columns:])
        mirrored = [s[:, columns:] for s in new_state]
        return update, [s[:, :columns] for s in new_state] + new_moments + mirrored
    return update, new_state + new_moments


def zero_state(config: NetworkConfig, coordinates: int) -> list:
    """Fresh (all-zero) state for ``coordinates`` coordinates, float32, each ``[width, N]``."""
    return [ops.zeros((width, coordinates), dtype="float32") for _, width in state_layout(config)]
