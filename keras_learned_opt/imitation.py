"""Warm start by imitation: train the update network to reproduce a hand-made rule.

Meta-training from random weights spends its first episodes rediscovering what
momentum SGD already does, and truncated backpropagation then stays near the
first good rule it finds. Chen et al. 2020 ("Training Stronger Baselines for
Learning to Optimize", NeurIPS) start instead from a network that imitates a
strong analytic optimizer and meta-train from there. This module makes that
starting point:

1. run the *teacher* (Nesterov momentum, optionally with its rate cut over the
   last part of the run; Adam; Nesterov on delta-bar-delta gains; or a trained
   update network, which distils that network into this one) on
   training episodes of a problem, recording every step's flattened gradient
   and the teacher's update, ``[steps, N]`` each; with several problems, each has its own teacher (say, the rate tuned
   for it), so the network learns to tell them apart by their gradients;
2. feed the recorded gradients of random batches of coordinates to the update
   network (``network.apply_network``, zero initial state, the teacher's
   gradients at every step: teacher forcing) and lower, with Adam, the relative
   squared error of its updates against the teacher's (averaged over problems,
   each batch drawing the same number of coordinates from each);
3. every ``validate_every`` iterations, run the network as the optimizer on the
   validation seeds and keep the best weights (the geometric mean of the
   problems' final losses).

With ``student_runs`` (DAgger) the ``init_from`` network also runs episodes
itself and the teacher labels each of its steps (``record_student``); those
runs join the teacher's in step 2.

With ``window`` (``--window W``) step 2 uses a window of ``W`` steps at a random
multiple of ``W`` instead of the whole run, starting from the state the network
reaches there when fed the run's gradients (``network_state_after``, no
backpropagation through it). Long teacher runs (``--steps 1000``) then cost per
iteration about what short ones do, and the network learns what to do late in a
run, which 100-step runs never show it.

The output is a weight file like the meta-trainer's, meant for its
``--init-from``; the meta-trainer copies this file's provenance into its own.
Command line::

    python -m keras_learned_opt.imitation --problem fmnist_mlp \\
        --teacher nesterov:lr=0.5,final=0.3 --out warm.h5
    python -m keras_learned_opt.imitation --problem fmnist_mlp --teacher nesterov:lr=0.3 \\
        --problem fmnist_cnn --teacher adam:lr=0.03 --out warm-mix.h5

Killed and started again with the same command, a run resumes from its last
checkpoint (``<out>.imitation-ckpt.npz``); the output file is only replaced atomically.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import json
import math
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from keras_learned_opt.network import NetworkConfig


DECAYS = ("cut", "linear")


def _parse_options(spec: str, keys: dict[str, str]) -> dict[str, Any]:
    """``"name:key=value,..."`` -> ``{field: value}`` for the keys a teacher knows
    (numbers, except ``decay``, which names the shape of the final rate cut)."""
    values: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in spec.partition(":")[2].split(","))):
        key, equals, value = item.partition("=")
        if not equals or key not in keys:
            raise ValueError(f"bad teacher option {item!r} in {spec!r}; "
                             f"options: {', '.join(keys)}")
        if key == "decay":
            if value not in DECAYS:
                raise ValueError(f"teacher option decay must be one of {DECAYS}, got {value!r}")
            values[keys[key]] = value
            continue
        try:
            values[keys[key]] = float(value)
        except ValueError:
            raise ValueError(f"teacher option {key} needs a number, got {value!r}") from None
    if "learning_rate" not in values:
        raise ValueError(f"teacher {spec!r} needs a learning rate, e.g. 'nesterov:lr=0.5'")
    return values


def _cut_rates(learning_rate: float, final_factor: float, final_share: float,
               steps: int, decay: str = "cut") -> np.ndarray:
    """The rate of each of ``steps`` steps: ``learning_rate`` for the first
    ``1 - final_share`` of them; over the rest, ``learning_rate * final_factor``
    (``decay="cut"``) or a straight line from ``learning_rate`` where that share
    starts to ``learning_rate * final_factor`` where the run ends (``"linear"``)."""
    if decay == "linear":
        done = np.arange(steps) / steps
        ramp = np.clip((done - (1.0 - final_share)) / max(final_share, 1e-12), 0.0, 1.0)
        return learning_rate * (1.0 - (1.0 - final_factor) * ramp)
    cut = np.arange(steps) >= (1.0 - final_share) * steps
    return np.where(cut, learning_rate * final_factor, learning_rate)


@dataclasses.dataclass(frozen=True)
class NesterovTeacher:
    """SGD with Nesterov momentum as ``keras.optimizers.SGD(nesterov=True)`` runs it.

    The rate is ``learning_rate`` for the first ``1 - final_share`` of a run and
    ``learning_rate * final_factor`` after that (``final_factor=1``: constant),
    reached at once (``decay="cut"``) or along a straight line (``"linear"``).
    """

    learning_rate: float
    momentum: float = 0.9
    final_factor: float = 1.0
    final_share: float = 0.2
    decay: str = "cut"

    def __post_init__(self) -> None:
        if not self.learning_rate > 0:
            raise ValueError(f"teacher learning rate must be > 0, got {self.learning_rate}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"teacher momentum must be in [0, 1), got {self.momentum}")
        if not self.final_factor > 0 or not 0 <= self.final_share <= 1:
            raise ValueError("teacher final factor must be > 0 and final share in [0, 1]")
        if self.decay not in DECAYS:
            raise ValueError(f"teacher decay must be one of {DECAYS}, got {self.decay!r}")

    KEYS = {"lr": "learning_rate", "momentum": "momentum", "final": "final_factor",
            "final_share": "final_share", "decay": "decay"}

    @classmethod
    def parse(cls, spec: str) -> "NesterovTeacher":
        """``"nesterov:lr=0.5,momentum=0.9,final=0.3,final_share=0.2"`` (``lr`` required)."""
        return cls(**_parse_options(spec, cls.KEYS))

    def rates(self, steps: int) -> np.ndarray:
        """The learning rate of each of ``steps`` steps, ``[steps]``."""
        return _cut_rates(self.learning_rate, self.final_factor, self.final_share, steps,
                          self.decay)

    def start(self, params: list) -> list:
        """The teacher's state for parameters ``params``: the velocities."""
        return [p * 0.0 for p in params]

    def update(self, grads: list, velocity: list, t: int, steps: int) -> tuple[list, list]:
        """Step ``t`` (0-based) of ``steps``: what to add to each parameter, new state."""
        rate = np.float32(self.rates(steps)[t])
        velocity = [self.momentum * v - rate * g for v, g in zip(velocity, grads)]
        return [self.momentum * v - rate * g for v, g in zip(velocity, grads)], velocity


@dataclasses.dataclass(frozen=True)
class AdamTeacher:
    """Adam as ``keras.optimizers.Adam`` runs it (bias-corrected rate, epsilon outside the
    root), with the same optional final rate cut as ``NesterovTeacher``."""

    learning_rate: float
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-7
    final_factor: float = 1.0
    final_share: float = 0.2
    decay: str = "cut"

    def __post_init__(self) -> None:
        if not self.learning_rate > 0:
            raise ValueError(f"teacher learning rate must be > 0, got {self.learning_rate}")
        if not (0 <= self.beta_1 < 1 and 0 <= self.beta_2 < 1 and self.epsilon > 0):
            raise ValueError("teacher betas must be in [0, 1) and epsilon > 0")
        if not self.final_factor > 0 or not 0 <= self.final_share <= 1:
            raise ValueError("teacher final factor must be > 0 and final share in [0, 1]")
        if self.decay not in DECAYS:
            raise ValueError(f"teacher decay must be one of {DECAYS}, got {self.decay!r}")

    KEYS = {"lr": "learning_rate", "beta_1": "beta_1", "beta_2": "beta_2",
            "epsilon": "epsilon", "final": "final_factor", "final_share": "final_share",
            "decay": "decay"}

    @classmethod
    def parse(cls, spec: str) -> "AdamTeacher":
        """``"adam:lr=0.01,beta_1=0.9,beta_2=0.999,epsilon=1e-7,final=0.3,final_share=0.2"``
        (``lr`` required)."""
        return cls(**_parse_options(spec, cls.KEYS))

    def start(self, params: list) -> tuple[list, list]:
        """The teacher's state: first and second moments."""
        return [p * 0.0 for p in params], [p * 0.0 for p in params]

    def update(self, grads: list, moments: tuple, t: int, steps: int) -> tuple[list, tuple]:
        first, second = moments
        first = [m + (g - m) * (1 - self.beta_1) for m, g in zip(first, grads)]
        second = [v + (g * g - v) * (1 - self.beta_2) for v, g in zip(second, grads)]
        base = _cut_rates(self.learning_rate, self.final_factor, self.final_share, steps,
                          self.decay)[t]
        rate = np.float32(base * math.sqrt(1 - self.beta_2 ** (t + 1))
                          / (1 - self.beta_1 ** (t + 1)))
        steps_ = [-rate * m / (v ** 0.5 + self.epsilon) for m, v in zip(first, second)]
        return steps_, (first, second)


@dataclasses.dataclass(frozen=True)
class DeltaBarDeltaTeacher:
    """Nesterov momentum on gradients scaled by per-coordinate gains (delta-bar-delta).

    Jacobs 1988 ("Increased rates of convergence through learning rate
    adaptation"): a coordinate's gain grows by ``1 + up`` when its gradient has
    the sign of the running average of its past gradients (decay ``trace``),
    shrinks by ``1 - down`` when the signs differ, and stays within
    ``[gain_min, gain_max]``. The scaled gradient then drives Nesterov momentum
    as ``NesterovTeacher`` runs it, with the same optional final rate cut. The
    rule needs only each coordinate's own gradient history, so a coordinate-wise
    network can represent it, and it is odd in the gradient (an antisymmetric
    network can too).

    With ``power`` > 0 the gradient is first divided by ``rms ** power``, where
    ``rms`` is the root of a running mean of its squares (decay ``beta_2``,
    started at the first squared gradient): a partial Adam-style normalization
    (``power`` 0.5 would be RMSProp's) that evens out coordinates of different
    gradient scales.
    """

    learning_rate: float
    up: float = 0.1
    down: float = 0.1
    trace: float = 0.7
    gain_min: float = 0.1
    gain_max: float = 10.0
    momentum: float = 0.9
    final_factor: float = 1.0
    final_share: float = 0.2
    decay: str = "cut"
    power: float = 0.0
    beta_2: float = 0.99

    def __post_init__(self) -> None:
        if not self.learning_rate > 0:
            raise ValueError(f"teacher learning rate must be > 0, got {self.learning_rate}")
        if not (0 <= self.power <= 1 and 0 <= self.beta_2 < 1):
            raise ValueError("teacher needs power in [0, 1] and beta_2 in [0, 1)")
        if not (self.up >= 0 and 0 <= self.down < 1 and 0 <= self.trace < 1):
            raise ValueError("teacher needs up >= 0, down in [0, 1) and trace in [0, 1)")
        if not 0 < self.gain_min <= 1 <= self.gain_max:
            raise ValueError("teacher gains need 0 < gain_min <= 1 <= gain_max")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"teacher momentum must be in [0, 1), got {self.momentum}")
        if not self.final_factor > 0 or not 0 <= self.final_share <= 1:
            raise ValueError("teacher final factor must be > 0 and final share in [0, 1]")
        if self.decay not in DECAYS:
            raise ValueError(f"teacher decay must be one of {DECAYS}, got {self.decay!r}")

    KEYS = {"lr": "learning_rate", "up": "up", "down": "down", "trace": "trace",
            "gain_min": "gain_min", "gain_max": "gain_max", "momentum": "momentum",
            "final": "final_factor", "final_share": "final_share", "decay": "decay",
            "power": "power",
            "beta_2": "beta_2"}

    @classmethod
    def parse(cls, spec: str) -> "DeltaBarDeltaTeacher":
        """``"dbd:lr=0.5,up=0.1,down=0.1,trace=0.7,final=0.3,power=0.3"`` (``lr`` required)."""
        return cls(**_parse_options(spec, cls.KEYS))

    def rates(self, steps: int) -> np.ndarray:
        """The learning rate of each of ``steps`` steps, ``[steps]``."""
        return _cut_rates(self.learning_rate, self.final_factor, self.final_share, steps,
                          self.decay)

    def start(self, params: list) -> tuple[list, list, list, list]:
        """The teacher's state: velocities, gains (ones), gradient traces, mean squares."""
        return ([p * 0.0 for p in params], [p * 0.0 + 1.0 for p in params],
                [p * 0.0 for p in params], [p * 0.0 for p in params])

    def update(self, grads: list, state: tuple, t: int, steps: int) -> tuple[list, tuple]:
        """Step ``t`` (0-based) of ``steps``: what to add to each parameter, new state."""
        return self.step(grads, state, np.float32(self.rates(steps)[t]))

    def step(self, grads: list, state: tuple, rate: Any) -> tuple[list, tuple]:
        """One step at learning rate ``rate`` (a float or a scalar tensor); any shapes."""
        from keras import ops

        velocity, gains, traces, squares = state
        gains = [ops.clip(k * ops.where(g * r > 0, 1.0 + self.up,
                                        ops.where(g * r < 0, 1.0 - self.down, 1.0)),
                          self.gain_min, self.gain_max) for k, g, r in zip(gains, grads, traces)]
        traces = [self.trace * r + (1.0 - self.trace) * g for r, g in zip(traces, grads)]
        if self.power:
            # A zero mean square means no gradient seen yet: start the average there.
            squares = [ops.where(s == 0, g * g, self.beta_2 * s + (1.0 - self.beta_2) * g * g)
                       for s, g in zip(squares, grads)]
            grads = [g / ops.power(ops.sqrt(s) + 1e-8, self.power)
                     for g, s in zip(grads, squares)]
        velocity = [self.momentum * v - rate * k * g for v, k, g in zip(velocity, gains, grads)]
        steps_ = [self.momentum * v - rate * k * g for v, k, g in zip(velocity, gains, grads)]
        return steps_, (velocity, gains, traces, squares)


@dataclasses.dataclass(frozen=True)
class LearnedTeacher:
    """A trained update network as the teacher: distillation.

    A hand rule that is good on one problem may be worse there than a network
    already trained for it (``paper-fmnist-mlp-dbd-rms2`` on the 100-step
    sigmoid MLP beats its own delta-bar-delta teacher). With this teacher a
    new network can keep that network's behaviour on the problems it is good
    at while other problems keep their hand-made teachers. The teacher runs
    as ``LearnedOptimizer`` would at learning rate 1, told each run's length
    (``horizon``) if it reads one.

    Attributes:
        source: a bundled weight name or a weight-file path.
        antisymmetric: run the file's weights antisymmetrically (1) or not (0)
            whatever the file says; ``None``: as the file says.
    """

    source: str
    antisymmetric: bool | None = None

    def __post_init__(self) -> None:
        self.path  # a missing or unreadable file fails when the spec is parsed

    @classmethod
    def parse(cls, spec: str) -> "LearnedTeacher":
        """``"learned:NAME_OR_PATH[,antisymmetric=0|1]"``."""
        source, *options = [part.strip() for part in spec.partition(":")[2].split(",")]
        if not source:
            raise ValueError(f"teacher {spec!r} needs a weight file or bundled name, "
                             "e.g. 'learned:paper-fmnist-mlp-dbd-rms2'")
        values: dict[str, Any] = {}
        for item in options:
            key, _, value = item.partition("=")
            if key != "antisymmetric" or value not in ("0", "1"):
                raise ValueError(f"bad teacher option {item!r} in {spec!r}; options: "
                                 "antisymmetric=0 or antisymmetric=1")
            values["antisymmetric"] = value == "1"
        return cls(source, **values)

    @functools.cached_property
    def path(self) -> Path:
        from keras_learned_opt.bundled import resolve_weights

        return resolve_weights(self.source)

    @functools.cached_property
    def network(self) -> tuple[dict, NetworkConfig, str]:
        """The teacher's weights (tensors), architecture and file digest (sha256)."""
        import tensorflow as tf

        from keras_learned_opt.weights import load_weight_file

        loaded = load_weight_file(self.path)
        config = loaded.config
        if self.antisymmetric is not None:
            config = dataclasses.replace(config, antisymmetric=self.antisymmetric)
        weights = {n: tf.constant(np.asarray(a, np.float32)) for n, a in loaded.arrays.items()}
        return weights, config, hashlib.sha256(self.path.read_bytes()).hexdigest()

    def start(self, params: list) -> list:
        """The teacher network's zero state for all coordinates of ``params``."""
        from keras_learned_opt.network import zero_state

        return zero_state(self.network[1], sum(int(np.prod(p.shape)) for p in params))

    def update(self, grads: list, state: list, t: int, steps: int) -> tuple[list, list]:
        from keras import ops

        from keras_learned_opt.network import apply_network

        weights, config, _ = self.network
        flat = ops.concatenate([ops.reshape(g, [-1]) for g in grads], axis=0)
        update, state = apply_network(weights, config, flat, state, t + 1, float(steps))
        sizes = [int(np.prod(g.shape)) for g in grads]
        pieces = ops.split(update, np.cumsum(sizes)[:-1].tolist()) if len(sizes) > 1 else [update]
        return [ops.reshape(u, g.shape) for u, g in zip(pieces, grads)], state

    def provenance(self) -> dict:
        """What identifies the teacher in an output file's provenance."""
        return {"path": str(self.path), "sha256": self.network[2],
                "network": self.network[1].to_dict()}


TEACHERS = {"nesterov": NesterovTeacher, "adam": AdamTeacher, "dbd": DeltaBarDeltaTeacher,
            "learned": LearnedTeacher}


Teacher = NesterovTeacher | AdamTeacher | DeltaBarDeltaTeacher | LearnedTeacher


def parse_teacher(spec: str) -> Teacher:
    """A teacher from its spec: ``nesterov:lr=R[,...]``, ``adam:lr=R[,...]``,
    ``dbd:lr=R[,...]`` or ``learned:NAME_OR_PATH[,antisymmetric=0|1]``."""
    name = spec.partition(":")[0].strip()
    if name not in TEACHERS:
        raise ValueError(f"unknown teacher {name!r} in {spec!r}; known: "
                         "'nesterov:lr=...', 'adam:lr=...', 'dbd:lr=...', 'learned:FILE'")
    return TEACHERS[name].parse(spec)


def record_teacher(problem: Any, teacher: Teacher, seed: int,
                   steps: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The teacher's run on one episode: gradients ``[steps, N]``, updates ``[steps, N]``
    (what is added to the flattened parameters) and minibatch losses ``[steps]``."""
    import tensorflow as tf

    episode = problem.episode(int(seed), steps)
    params = [tf.constant(p) for p in episode.params]
    task = [tf.constant(a) for a in episode.task]
    state = teacher.start(params)
    gradients, updates, losses = [], [], []
    for t in range(steps):
        with tf.GradientTape() as tape:
            tape.watch(params)
            loss = problem.loss(params, task, [tf.constant(b[t]) for b in episode.batches])
        grads = tape.gradient(loss, params)
        step, state = teacher.update(grads, state, t, steps)
        params = [p + s for p, s in zip(params, step)]
        gradients.append(np.concatenate([np.ravel(g) for g in grads]))
        updates.append(np.concatenate([np.ravel(s) for s in step]))
        losses.append(float(loss))
    return (np.stack(gradients).astype(np.float32), np.stack(updates).astype(np.float32),
            np.asarray(losses))


def record_student(problem: Any, teacher: Teacher, weights: dict, config: NetworkConfig,
                   seed: int, steps: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The network's own run on one episode, labelled by the teacher (DAgger).

    Ross et al. 2011 ("A Reduction of Imitation Learning and Structured Prediction
    to No-Regret Online Learning"): a student trained only on the teacher's
    trajectories never sees the states its own small errors lead to. Here the
    network (``weights``, as the optimizer at learning rate 1) moves the
    parameters, and the teacher, fed the same gradients, says at every step what
    it would have done. Returns gradients ``[steps, N]``, the teacher's updates
    ``[steps, N]`` and the minibatch losses ``[steps]`` of the network's run.
    """
    import tensorflow as tf

    from keras_learned_opt.network import apply_network, zero_state

    episode = problem.episode(int(seed), steps)
    params = [tf.constant(p) for p in episode.params]
    task = [tf.constant(a) for a in episode.task]
    weights = {n: tf.constant(np.asarray(w, np.float32)) for n, w in weights.items()}
    sizes = [int(np.prod(p.shape)) for p in params]
    state, teacher_state = zero_state(config, sum(sizes)), teacher.start(params)
    gradients, targets, losses = [], [], []
    for t in range(steps):
        with tf.GradientTape() as tape:
            tape.watch(params)
            loss = problem.loss(params, task, [tf.constant(b[t]) for b in episode.batches])
        grads = tape.gradient(loss, params)
        target, teacher_state = teacher.update(grads, teacher_state, t, steps)
        flat = tf.concat([tf.reshape(g, [-1]) for g in grads], axis=0)
        update, state = apply_network(weights, config, flat, state, t + 1, steps)
        params = [p + tf.reshape(u, p.shape)
                  for p, u in zip(params, tf.split(update, sizes))]
        gradients.append(flat.numpy())
        targets.append(np.concatenate([np.ravel(u) for u in target]))
        losses.append(float(loss))
    return (np.stack(gradients).astype(np.float32), np.stack(targets).astype(np.float32),
            np.asarray(losses))


ERROR_WEIGHTINGS = ("pooled", "coordinate")
# "coordinate" weighting: a coordinate whose targets' sum of squares is below this share
# of the mean over coordinates counts in proportion to it, not fully (near-zero targets
# would otherwise divide by almost nothing).
COORDINATE_FLOOR = 0.01


def imitation_error(weights: dict, config: NetworkConfig, gradients: Any, targets: Any,
                    state: Sequence | None = None, first_step: Any = 0,
                    horizon: Any = None, weighting: str = "pooled") -> Any:
    """Relative squared error of the network's updates against ``targets``.

    ``gradients`` and ``targets`` are ``[steps, C]`` for ``C`` coordinates; the
    network starts from ``state`` (zero state when ``None``; see
    ``network_state_after`` for a window that starts later in a run) and sees
    ``gradients[t]`` at step ``first_step + t`` (0-based) of a run of ``horizon``
    steps (what networks with ``horizon_input`` read; ``None``: unknown).
    Returns, with ``weighting="pooled"``, ``sum (update - target)^2 / sum
    target^2`` over steps and coordinates (0 is perfect; 1 is what a network
    that never moves scores): coordinates with large updates dominate it. With
    ``"coordinate"``, each coordinate's error is divided by its own targets' sum
    of squares (floored at ``COORDINATE_FLOOR`` of their mean) before the mean
    over coordinates, so that the many coordinates with small updates (most of
    a first layer's) count as much as the few with large ones; 1 is still what
    a network that never moves scores, for coordinates above the floor.
    """
    from keras import ops

    from keras_learned_opt.network import apply_network, zero_state

    columns = gradients.shape[1]
    state = zero_state(config, columns) if state is None else list(state)
    if weighting not in ERROR_WEIGHTINGS:
        raise ValueError(f"weighting must be one of {ERROR_WEIGHTINGS}, got {weighting!r}")
    error = 0.0  # per coordinate, [C]
    for t in range(gradients.shape[0]):
        update, state = apply_network(weights, config, gradients[t], state, first_step + t + 1,
                                      horizon)
        error = error + ops.square(update - targets[t])
    scale = ops.sum(ops.square(targets), axis=0)
    if weighting == "pooled":
        return ops.sum(error) / ops.maximum(ops.sum(scale), 1e-30)
    floor = ops.maximum(COORDINATE_FLOOR * ops.mean(scale), 1e-30)
    return ops.mean(error / ops.maximum(scale, floor))


def network_state_after(weights: dict, config: NetworkConfig, gradients: Any,
                        horizon: Any = None) -> list:
    """The network's state after it has seen ``gradients`` (``[s, C]``, any ``s >= 0``,
    also unknown while tracing) from zero state in a run of ``horizon`` steps,
    each ``[width, C]``.

    Under teacher forcing the state at step ``s`` depends on the recorded
    gradients only, so a window ``[s, s + W)`` of a long run can be imitated
    from here without backpropagating through the first ``s`` steps.
    """
    import tensorflow as tf

    from keras_learned_opt.network import apply_network, zero_state

    gradients = tf.convert_to_tensor(gradients)

    def body(t, *state):
        _, state = apply_network(weights, config, gradients[t], list(state), t + 1, horizon)
        return (t + 1, *state)

    columns = gradients.shape[1]  # unknown when a traced function was generalized
    start = zero_state(config, tf.shape(gradients)[1] if columns is None else columns)
    final = tf.while_loop(lambda t, *state: t < tf.shape(gradients)[0], body,
                          (tf.constant(0), *start))
    return [tf.stop_gradient(s) for s in final[1:]]


@dataclasses.dataclass
class ImitationConfig:
    """Everything that defines an imitation run (stored in checkpoints and provenance)."""

    problems: list = dataclasses.field(default_factory=lambda: ["fmnist_mlp"])
    teachers: list = dataclasses.field(default_factory=lambda: ["nesterov:lr=0.5"])
    network: dict = dataclasses.field(default_factory=dict)
    init_from: str = ""
    steps: int = 100
    window: int = 0
    teacher_runs: int = 6
    student_runs: int = 0
    iterations: int = 1500
    columns: int = 8192
    learning_rate: float = 3e-3
    clipnorm: float = 1.0
    error_weighting: str = "pooled"
    validate_every: int = 50
    validation_seeds: int = 8
    checkpoint_every: int = 50
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.problems, str):
            self.problems = [self.problems]
        if isinstance(self.teachers, str):
            self.teachers = [self.teachers]
        self.problems, self.teachers = list(self.problems), list(self.teachers)
        if not self.problems or not self.teachers:
            raise ValueError("an imitation needs at least one problem and one teacher")
        if len(self.teachers) == 1:
            self.teachers = self.teachers * len(self.problems)
        if len(self.teachers) != len(self.problems):
            raise ValueError(f"give one teacher, or one per problem: {len(self.problems)} "
                             f"problems {self.problems}, {len(self.teachers)} teachers")
        for spec in self.teachers:
            parse_teacher(spec)  # a clear error now, not after the teacher runs
        for entry in self.problems:
            problem_and_steps(entry, self.steps)  # a malformed "name@steps" fails here
        for name in ("steps", "teacher_runs", "iterations", "columns", "validate_every",
                     "validation_seeds", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for steps in self.problem_steps:
            if self.window < 0 or self.window > steps or (self.window and steps % self.window):
                raise ValueError(f"window must be 0 (the whole run) or divide every problem's "
                                 f"steps ({steps}), got {self.window}")
        if self.student_runs < 0:
            raise ValueError(f"student_runs must be >= 0, got {self.student_runs}")
        if self.error_weighting not in ERROR_WEIGHTINGS:
            raise ValueError(f"error_weighting must be one of {ERROR_WEIGHTINGS}, "
                             f"got {self.error_weighting!r}")
        if self.student_runs and not self.init_from:
            raise ValueError("student runs need a student: give init_from (--init-from), the "
                             "network whose own runs the teacher labels")

    @property
    def problem_steps(self) -> list[int]:
        """Steps of each problem's runs: its ``@steps`` suffix, else ``steps``."""
        return [problem_and_steps(entry, self.steps)[1] for entry in self.problems]

    def fingerprint(self) -> str:
        """What must not change for a checkpoint to be resumed."""
        d = dataclasses.asdict(self)
        d.pop("iterations")  # extending a finished run is allowed
        for option in ("student_runs", "window"):
            if not d[option]:
                d.pop(option)  # so checkpoints from before the option still resume
        if d["error_weighting"] == "pooled":
            d.pop("error_weighting")
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def problem_and_steps(entry: str, default_steps: int) -> tuple[str, int]:
    """``"fmnist_mlp@1000"`` -> ``("fmnist_mlp", 1000)``; no suffix: ``default_steps``.

    Runs of several lengths in one imitation teach a ``horizon_input`` network
    what to do at each fraction of a run, whatever its length.
    """
    name, sep, steps = entry.rpartition("@")
    if not sep or not steps.isdigit():  # e.g. "quadratic@scaled1": part of a problem's name
        return entry, int(default_steps)
    if int(steps) < 1:
        raise ValueError(f"problem '{entry}': its number of steps after '@' must be positive")
    return name, int(steps)


def teacher_seed(seed: int, run: int) -> int:
    """Training seed of teacher run ``run`` (below the validation seeds)."""
    from keras_learned_opt.meta_train import VALIDATION_SEED_BASE

    digest = hashlib.sha256(f"imitation/{seed}/{run}".encode()).digest()
    return int.from_bytes(digest[:8], "little") % VALIDATION_SEED_BASE


class Imitator:
    """Runs an imitation: teacher runs, then Adam on ``imitation_error`` with validation."""

    def __init__(self, config: ImitationConfig, out: str | Path, command: str = "",
                 verbose: int = 1) -> None:
        import tensorflow as tf

        from keras_learned_opt.meta_train import VALIDATION_SEED_BASE
        from keras_learned_opt.network import initial_weights, starting_arrays
        from keras_learned_opt.problems import get_problem
        from keras_learned_opt.weights import load_weight_file

        self.config, self.out, self.command, self.verbose = config, Path(out), command, verbose
        self.checkpoint_path = self.out.with_name(self.out.name + ".imitation-ckpt.npz")
        self.teachers = [parse_teacher(spec) for spec in config.teachers]
        self.problems = [get_problem(problem_and_steps(entry, config.steps)[0])
                         for entry in config.problems]
        self.steps = config.problem_steps
        # What a horizon_input network is told: each problem's run length.
        self.horizons = [float(s) for s in self.steps]
        self.network_config = NetworkConfig.from_dict(config.network)
        self.validation_seeds = [VALIDATION_SEED_BASE + i for i in range(config.validation_seeds)]
        self.init_provenance: dict = {}
        if config.init_from:
            start = load_weight_file(config.init_from)
            # Antisymmetry and an added horizon input may differ (same weights, run
            # differently); starting_arrays refuses any other difference.
            arrays = starting_arrays(start.arrays, start.config, self.network_config,
                                     config.init_from)
            self.init_provenance = start.provenance
        else:
            arrays = initial_weights(self.network_config, config.seed)
        self.names = sorted(arrays)
        self.init_arrays = {n: np.asarray(arrays[n], np.float32) for n in self.names}
        self.weights = {n: tf.Variable(np.asarray(arrays[n], np.float32), name=n.replace("/", "_"))
                        for n in self.names}
        import keras

        self.optimizer = keras.optimizers.Adam(config.learning_rate,
                                               global_clipnorm=config.clipnorm)
        self.optimizer.build([self.weights[n] for n in self.names])
        self.iteration = 0
        self.best_score = math.inf
        self.best_weights = {n: np.asarray(arrays[n], np.float32) for n in self.names}
        self.history: list[dict] = []
        self.train_seconds = 0.0
        self.skipped_steps = 0
        self._step = tf.function(self._train_step, reduce_retracing=True)
        self._state_after = tf.function(
            lambda weights, gradients, horizon: network_state_after(
                weights, self.network_config, gradients, horizon), reduce_retracing=True)

    def _train_step(self, gradients, targets, states=None, first_steps=None):
        """``gradients``, ``targets``: one ``[steps, C_p]`` pair per problem (each
        problem's window starting at its ``first_steps`` entry from its ``states``,
        or the whole run from zero state); the error is the mean of the problems'
        relative errors, so no teacher's scale dominates."""
        import tensorflow as tf

        states = states or [None] * len(gradients)
        first_steps = first_steps or [0] * len(gradients)
        with tf.GradientTape() as tape:
            error = tf.add_n([imitation_error(self.weights, self.network_config, g, t, s,
                                              first, horizon, self.config.error_weighting)
                              for g, t, s, first, horizon
                              in zip(gradients, targets, states, first_steps,
                                     self.horizons)]) / len(gradients)
        return error, tape.gradient(error, [self.weights[n] for n in self.names])

    def _batch(self, gradients, targets, picks, rng):
        """Arguments of ``_step`` for one batch: the whole runs' picked columns, or
        (with ``window``) per problem a window drawn at a multiple of ``window``
        steps, with the state the network reaches there under teacher forcing."""
        import tensorflow as tf

        window = self.config.window
        if not window:
            return ([tf.constant(g[:, pick]) for g, pick in zip(gradients, picks)],
                    [tf.constant(u[:, pick]) for u, pick in zip(targets, picks)])
        # One draw for all problems of the same length, as before runs of several
        # lengths were possible, so that such imitations draw the same windows.
        draw = int(rng.integers(max(self.steps) // window))
        starts = [window * (draw % (steps // window)) for steps in self.steps]
        states = [self._state_after({n: v for n, v in self.weights.items()},
                                    tf.constant(g[:start, pick]), tf.constant(horizon))
                  for g, pick, start, horizon in zip(gradients, picks, starts, self.horizons)]
        return ([tf.constant(g[start:start + window, pick])
                 for g, pick, start in zip(gradients, picks, starts)],
                [tf.constant(u[start:start + window, pick])
                 for u, pick, start in zip(targets, picks, starts)],
                states, [tf.constant(start) for start in starts])

    def record(self) -> tuple[list[np.ndarray], list[np.ndarray], dict[str, list[float]]]:
        """All teacher runs: per problem, gradients and updates ``[steps, runs * N]``;
        the final losses of each problem's runs."""
        gradients, updates, finals = [], [], {}
        for name, problem, spec, teacher, steps in zip(self.config.problems, self.problems,
                                                       self.config.teachers, self.teachers,
                                                       self.steps):
            runs = [record_teacher(problem, teacher, teacher_seed(self.config.seed, r),
                                   steps) for r in range(self.config.teacher_runs)]
            finals[name] = [float(np.mean(losses[-10:])) for _, _, losses in runs]
            for (_, run_updates, losses), final in zip(runs, finals[name]):
                if not (np.all(np.isfinite(run_updates)) and final < losses[0]):
                    raise ValueError(
                        f"the teacher {spec} diverged on {name} (loss {losses[0]:.4g} at the "
                        f"start, {final:.4g} at the end): there is nothing to imitate; give it "
                        "a smaller learning rate")
            # DAgger: the starting network's own runs, on further training seeds, labelled
            # by the teacher (always the --init-from weights, so a resumed run sees the same).
            students = [record_student(problem, teacher, self.init_arrays, self.network_config,
                                       teacher_seed(self.config.seed, self.config.teacher_runs + r),
                                       steps)
                        for r in range(self.config.student_runs)]
            for _, _, losses in students:
                if not np.all(np.isfinite(losses)):
                    raise ValueError(f"the --init-from network diverged on {name}: its own "
                                     "runs cannot be labelled; drop --student-runs")
            runs += students
            gradients.append(np.concatenate([g for g, _, _ in runs], axis=1))
            updates.append(np.concatenate([u for _, u, _ in runs], axis=1))
        return gradients, updates, finals

    def validate(self) -> float:
        """Geometric mean over problems of the mean final loss of the current weights as
        the optimizer on the validation seeds (for one problem: its mean final loss)."""
        from keras_learned_opt.unroll import evaluate, final_loss

        weights = {n: v.numpy() for n, v in self.weights.items()}
        means = [np.mean(final_loss(evaluate(weights, self.network_config, problem,
                                             self.validation_seeds, steps,
                                             unroll=math.gcd(steps, 20))))
                 for problem, steps in zip(self.problems, self.steps)]
        return float(np.exp(np.mean(np.log(means))))

    # ----- checkpoints -------------------------------------------------------------
    def save_checkpoint(self) -> None:
        from keras_learned_opt.meta_train import _atomic_savez

        arrays = {f"w/{n}": v.numpy() for n, v in self.weights.items()}
        arrays.update({f"best/{n}": a for n, a in self.best_weights.items()})
        arrays.update({f"opt/{i}": v.numpy() for i, v in enumerate(self.optimizer.variables)})
        meta = dict(fingerprint=self.config.fingerprint(), iteration=self.iteration,
                    best_score=self.best_score, history=self.history,
                    train_seconds=self.train_seconds, skipped_steps=self.skipped_steps)
        _atomic_savez(self.checkpoint_path, imitation_meta=np.asarray(json.dumps(meta)), **arrays)

    def load_checkpoint(self) -> bool:
        if not self.checkpoint_path.exists():
            return False
        with np.load(self.checkpoint_path) as data:
            if "imitation_meta" not in data.files:
                raise ValueError(f"{self.checkpoint_path} is not an imitation checkpoint")
            meta = json.loads(str(data["imitation_meta"]))
            if meta["fingerprint"] != self.config.fingerprint():
                raise ValueError(f"checkpoint {self.checkpoint_path} belongs to a different "
                                 "imitation configuration; delete it or change --out")
            for n in self.names:
                self.weights[n].assign(data[f"w/{n}"])
                self.best_weights[n] = data[f"best/{n}"]
            for i, v in enumerate(self.optimizer.variables):
                v.assign(data[f"opt/{i}"])
        self.iteration, self.best_score = meta["iteration"], meta["best_score"]
        self.history, self.train_seconds = meta["history"], meta["train_seconds"]
        self.skipped_steps = meta["skipped_steps"]
        return True

    def write_output(self, teacher_finals: dict[str, list[float]]) -> None:
        from keras_learned_opt.weights import default_provenance, save_weight_file

        provenance = default_provenance(
            command=self.command,
            imitation_config=dataclasses.asdict(self.config),
            teachers=[dict(spec=spec, kind=type(t).__name__, **dataclasses.asdict(t),
                           **(t.provenance() if isinstance(t, LearnedTeacher) else {}))
                      for spec, t in zip(self.config.teachers, self.teachers)],
            teacher_final_losses=teacher_finals,
            problems=list(self.config.problems),
            steps=self.config.steps,
            problem_steps=self.steps,
            seed=self.config.seed,
            validation_seeds=self.validation_seeds,
            iterations_run=self.iteration,
            best_validation_final_loss=self.best_score,
            validation_history=self.history,
            skipped_steps=self.skipped_steps,
            train_seconds=round(self.train_seconds, 1),
            **({"init_from_provenance": self.init_provenance} if self.init_provenance else {}),
        )
        pairs = ", ".join(f"{t} on {p}" for p, t in zip(self.config.problems,
                                                        self.config.teachers))
        windows = (f", {self.config.window}-step windows" if self.config.window else "")
        lengths = "/".join(str(s) for s in sorted(set(self.steps)))
        description = (f"imitation of {pairs} ({lengths}-step runs{windows}); "
                       "a starting point for meta-training")
        save_weight_file(self.out, self.best_weights, self.network_config, provenance,
                         description)

    def run(self, max_seconds: float | None = None) -> Path:
        """Imitate until ``iterations`` (or ``max_seconds``); writes and returns ``out``."""
        import keras
        import tensorflow as tf

        resumed = self.load_checkpoint()
        gradients, targets, teacher_finals = self.record()
        if self.verbose:
            finals = {name: np.round(f, 4).tolist() for name, f in teacher_finals.items()}
            print(f"{'resumed at iteration ' + str(self.iteration) + '; ' if resumed else ''}"
                  f"teacher final losses {finals}")
        config = self.config
        # The same number of coordinates from each problem, whatever its size.
        columns = [min(max(config.columns // len(gradients), 1), g.shape[1]) for g in gradients]
        bar = keras.utils.Progbar(config.iterations, verbose=self.verbose,
                                  stateful_metrics=["error", "val_loss"])
        bar.update(self.iteration)
        started = time.time()
        deadline = started + max_seconds if max_seconds else math.inf
        while self.iteration < config.iterations and time.time() < deadline:
            # The batch depends on (seed, iteration) only, so a resumed run sees the same.
            rng = np.random.default_rng([config.seed, self.iteration])
            picks = [rng.choice(g.shape[1], c, replace=False) for g, c in zip(gradients, columns)]
            error, grads = self._step(*self._batch(gradients, targets, picks, rng))
            error = float(error)
            if all(np.all(np.isfinite(g.numpy())) for g in grads):
                self.optimizer.apply(grads, [self.weights[n] for n in self.names])
            else:  # skipped: never a NaN weight
                self.skipped_steps += 1
            self.iteration += 1
            values = [("error", error)]
            last = self.iteration == config.iterations
            if self.iteration % config.validate_every == 0 or last:
                score = self.validate()
                self.history.append({"iteration": self.iteration, "error": error,
                                     "val_loss": score})
                if score < self.best_score:
                    self.best_score = score
                    self.best_weights = {n: v.numpy() for n, v in self.weights.items()}
                values.append(("val_loss", score))
            if self.iteration % config.checkpoint_every == 0 or last:
                self.train_seconds += time.time() - started
                started = time.time()
                self.save_checkpoint()
            bar.update(self.iteration, values)
        self.train_seconds += time.time() - started
        self.save_checkpoint()
        self.write_output(teacher_finals)
        return self.out


def imitate(out: str | Path, problem: str | Sequence[str] = "fmnist_mlp",
            teacher: str | Sequence[str] = "nesterov:lr=0.5", network: dict | None = None,
            verbose: int = 1, max_seconds: float | None = None, command: str | None = None,
            **options: Any) -> Path:
    """Python API: imitate ``teacher`` on ``problem`` and write the best weights to ``out``.

    ``problem`` and ``teacher`` may be lists: one teacher for every problem, or
    one per problem (``teacher[i]`` on ``problem[i]``). ``network`` holds
    ``NetworkConfig`` fields; ``options`` are ``ImitationConfig`` fields
    (iterations, columns, steps, teacher_runs, ...).
    """
    config = ImitationConfig(problems=[problem] if isinstance(problem, str) else list(problem),
                             teachers=[teacher] if isinstance(teacher, str) else list(teacher),
                             network=dict(network or {}), **options)
    imitator = Imitator(config, out, command=command or f"imitate(out={str(out)!r}, ...)",
                        verbose=verbose)
    return imitator.run(max_seconds=max_seconds)


def main(argv: Sequence[str] | None = None) -> int:
    from keras_learned_opt.meta_train import add_network_arguments, network_from_args

    parser = argparse.ArgumentParser(
        prog="python -m keras_learned_opt.imitation",
        description="Train an update network to imitate a hand-made optimizer (a warm start "
                    "for meta-training) and write its weight file.")
    parser.add_argument("--problem", action="append",
                        help="a registered problem, optionally with its run length as "
                             "NAME@STEPS (default --steps); repeat to imitate on several "
                             "(default fmnist_mlp)")
    parser.add_argument("--teacher", action="append",
                        help="nesterov:lr=R[,momentum=M][,final=F][,final_share=S] (the rate "
                             "is R*F over the last S of each run; decay=linear: falling "
                             "linearly from R to R*F over that share), "
                             "adam:lr=R[,beta_1=B1][,beta_2=B2][,epsilon=E][,final=F][,final_share=S] or "
                             "dbd:lr=R[,up=U][,down=D][,trace=T][,gain_min=A][,gain_max=B]"
                             "[,momentum=M][,final=F][,final_share=S][,decay=cut|linear][,power=P]"
                             "[,beta_2=B2] or "
                             "learned:NAME_OR_PATH[,antisymmetric=0|1] (a trained network); "
                             "once for all "
                             "problems or once per --problem, in the same order (default "
                             "nesterov:lr=0.5)")
    parser.add_argument("--out", required=True, help="weight file to write (HDF5)")
    parser.add_argument("--init-from", default="")
    parser.add_argument("--steps", type=int, default=100, help="optimizee steps per run")
    parser.add_argument("--window", type=int, default=0,
                        help="imitate random windows of this many steps (a divisor of "
                             "--steps), each from the state the network reaches there under "
                             "teacher forcing; 0: whole runs")
    parser.add_argument("--teacher-runs", type=int, default=6)
    parser.add_argument("--student-runs", type=int, default=0,
                        help="DAgger: also this many runs of the --init-from network itself, "
                             "each step labelled with the teacher's update for the gradients "
                             "that network met")
    parser.add_argument("--iterations", type=int, default=1500)
    parser.add_argument("--columns", type=int, default=8192,
                        help="coordinates per imitation batch")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--error-weighting", choices=ERROR_WEIGHTINGS, default="pooled",
                        help="pooled: one relative squared error over all coordinates (large "
                             "updates dominate it); coordinate: each coordinate's error "
                             "relative to its own targets, then the mean")
    parser.add_argument("--validate-every", type=int, default=50)
    parser.add_argument("--validation-seeds", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-minutes", type=float, default=None)
    parser.add_argument("--threads", type=int, default=0,
                        help="TensorFlow intra-op threads (0 = all cores)")
    parser.add_argument("--quiet", action="store_true")
    add_network_arguments(parser)
    args = parser.parse_args(argv)
    if args.threads:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    command = "python -m keras_learned_opt.imitation " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    out = imitate(args.out, problem=args.problem or ["fmnist_mlp"],
                  teacher=args.teacher or ["nesterov:lr=0.5"],
                  network=network_from_args(args), verbose=0 if args.quiet else 1,
                  max_seconds=args.max_minutes * 60 if args.max_minutes else None,
                  command=command, init_from=args.init_from, steps=args.steps,
                  window=args.window,
                  teacher_runs=args.teacher_runs, student_runs=args.student_runs,
                  iterations=args.iterations,
                  columns=args.columns, learning_rate=args.lr,
                  error_weighting=args.error_weighting, validate_every=args.validate_every, validation_seeds=args.validation_seeds,
                  seed=args.seed)
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
