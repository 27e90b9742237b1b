"""Differentiable optimizee unrolls driven by the update network (TensorFlow graphs).

``Unroller`` runs ``lanes`` independent episodes of one problem side by side for
``unroll`` steps. All coordinates of all lanes go through the update network in
one call per step (rows of one batch), so the matrix products are large.
Optimizee gradients are inputs to the network, not differentiated through
(Andrychowicz et al. 2016, section 2: no second derivatives), unless
``second_order=True``: then the meta-gradient also follows how each update
changes the later gradients (Hessian-vector products through the unroll),
at about twice the cost.

Shapes: ``params`` is a list over lanes of lists of parameter tensors; ``state``
is the network state for all ``lanes * N`` coordinates (``N`` parameters per
lane), in ``network.state_layout`` order; ``task`` arrays are ``[lanes, ...]``;
``batches`` arrays are ``[lanes, unroll, ...]``.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import tensorflow as tf

from keras_learned_opt.network import NetworkConfig, apply_network, zero_state
from keras_learned_opt.problems import Problem


LOSS_WEIGHTINGS = ("uniform", "linear", "final")
FINAL_STEPS = 10  # the protocol's metric: mean loss of the last 10 steps


class Unroller:
    """Compiled truncations of ``unroll`` steps for one problem and lane count."""

    def __init__(self, problem: Problem, config: NetworkConfig, unroll: int, lanes: int = 1,
                 meta_loss: str = "mean", loss_weighting: str = "uniform",
                 second_order: bool = False) -> None:
        if meta_loss not in ("mean", "log"):
            raise ValueError(f"meta_loss must be 'mean' or 'log', got {meta_loss!r}")
        if loss_weighting not in LOSS_WEIGHTINGS:
            raise ValueError(f"loss_weighting must be one of {LOSS_WEIGHTINGS}, "
                             f"got {loss_weighting!r}")
        self.loss_weighting = loss_weighting
        self.second_order = second_order
        self.problem = problem
        self.config = config
        self.unroll = unroll
        self.lanes = lanes
        self.meta_loss = meta_loss
        self.shapes = problem.parameter_shapes
        self.sizes = [int(np.prod(s)) for s in self.shapes]
        self.coordinates = lanes * sum(self.sizes)
        self._train = tf.function(self._train_truncation, reduce_retracing=True)
        self._forward = tf.function(self._forward_truncation, reduce_retracing=True)

    def initial_state(self) -> list:
        return zero_state(self.config, self.coordinates)

    def _lane_gradients(self, params, task, batches, t, tape=None):
        """Step ``t``'s loss of every lane and its flat gradients (constants, ``[n_k]`` each)."""
        lane_losses, flat_grads = [], []
        for k in range(self.lanes):
            with tf.GradientTape() as inner:
                inner.watch(params[k])
                loss = self.problem.loss(
                    params[k], [a[k] for a in task], [b[k, t] for b in batches]
                )
            if self.second_order:  # recorded by the outer tape: differentiated through
                grads = inner.gradient(loss, params[k])
                flat_grads += [tf.reshape(g, [-1]) for g in grads]
            else:
                if tape is not None:
                    with tape.stop_recording():
                        grads = inner.gradient(loss, params[k])
                else:
                    grads = inner.gradient(loss, params[k])
                flat_grads += [tf.stop_gradient(tf.reshape(g, [-1])) for g in grads]
            lane_losses.append(loss)
        return lane_losses, flat_grads

    def _network_step(self, weights, flat_grads, state, step, horizon):
        """Updates (one ``[n_k]`` per tensor, lanes in order) and the new state,
        from one network call over all coordinates."""
        update, state = apply_network(weights, self.config, tf.concat(flat_grads, axis=0),
                                      state, step, horizon)
        return tf.split(update, self.sizes * self.lanes), state

    def _steps(self, weights, params, state, task, batches, step0, horizon, tape=None):
        """Run ``unroll`` steps of a run of ``horizon`` steps (0: unknown);
        returns (params, state, losses [unroll, lanes])."""
        losses = []
        for t in range(self.unroll):
            lane_losses, flat_grads = self._lane_gradients(params, task, batches, t, tape)
            updates, state = self._network_step(weights, flat_grads, state, step0 + t + 1,
                                                horizon)
            pieces = iter(updates)
            params = [
                [p + tf.reshape(next(pieces), s) for p, s in zip(lane, self.shapes)]
                for lane in params
            ]
            losses.append(tf.stack(lane_losses))
        return params, state, tf.stack(losses)

    def _reduce(self, losses, step0):
        """Meta-loss of a truncation from its ``[unroll, lanes]`` losses.

        ``"linear"`` weighting makes step ``t`` of the episode count ``t + 1``
        times, so the meta-objective leans toward where the protocol measures:
        the end of the run (a uniform log loss mostly rewards early speed).
        ``"final"`` counts only the last ``FINAL_STEPS`` steps of the
        truncation: with truncations as long as the episode, exactly the
        protocol's metric.
        """
        values = tf.math.log(losses + 1e-8) if self.meta_loss == "log" else losses
        if self.loss_weighting == "linear":
            weights = tf.cast(tf.range(1, self.unroll + 1) + step0, values.dtype)
            weights = weights / tf.reduce_sum(weights)
            return tf.reduce_sum(tf.reduce_mean(values, axis=1) * weights)
        if self.loss_weighting == "final":
            return tf.reduce_mean(values[-FINAL_STEPS:])
        return tf.reduce_mean(values)

    def _train_truncation(self, weights, params, state, task, batches, step0, horizon):
        names = sorted(weights)
        with tf.GradientTape() as tape:
            tape.watch([weights[n] for n in names])
            params, state, losses = self._steps(weights, params, state, task, batches, step0,
                                                horizon, tape)
            meta_loss = self._reduce(losses, step0)
        grads = tape.gradient(meta_loss, [weights[n] for n in names])
        grads = {n: tf.zeros_like(weights[n]) if g is None else g for n, g in zip(names, grads)}
        params = [[tf.stop_gradient(p) for p in lane] for lane in params]
        state = [tf.stop_gradient(s) for s in state]
        return meta_loss, grads, params, state, losses

    def _forward_truncation(self, weights, params, state, task, batches, step0, horizon):
        return self._steps(weights, params, state, task, batches, step0, horizon)

    def train_truncation(self, weights: dict, params, state, task, batches, step0: int,
                         horizon: int = 0):
        """One truncation with meta-gradients: (meta_loss, grads, params, state, losses).

        ``horizon`` is the episode's length in steps (0: unknown), read by
        networks with ``horizon_input``."""
        return self._train(weights, params, state, task, batches, tf.constant(step0, tf.int32),
                           tf.constant(horizon, tf.float32))

    def forward_truncation(self, weights: dict, params, state, task, batches, step0: int,
                           horizon: int = 0):
        """One truncation without meta-gradients: (params, state, losses)."""
        return self._forward(weights, params, state, task, batches, tf.constant(step0, tf.int32),
                             tf.constant(horizon, tf.float32))

    def episodes(self, seeds: Sequence[int], steps: int):
        """Stacked initial params, task and batches for one episode per lane."""
        if len(seeds) != self.lanes:
            raise ValueError(f"need {self.lanes} seeds, got {len(seeds)}")
        episodes = [self.problem.episode(int(s), steps) for s in seeds]
        params = [[tf.constant(p) for p in e.params] for e in episodes]
        task = [tf.constant(np.stack(parts)) for parts in zip(*[e.task for e in episodes])]
        batches = [np.stack(parts) for parts in zip(*[e.batches for e in episodes])]
        return params, task, batches


def evaluate(
    weights: dict[str, Any],
    config: NetworkConfig,
    problem: Problem,
    seeds: Sequence[int],
    steps: int,
    unroll: int = 20,
    unroller: Unroller | None = None,
    horizon: int | None = None,
) -> np.ndarray:
    """Training losses ``[len(seeds), steps]`` of the network on fresh episodes.

    A network with ``horizon_input`` is told the run's length, ``steps``,
    unless ``horizon`` says otherwise (0: not told).

    The loss at step ``t`` is the minibatch loss before the ``t``-th update, as
    reported by ``model.fit``. Diverged lanes give non-finite values.
    """
    unroller = unroller or Unroller(problem, config, unroll, lanes=len(seeds))
    params, task, batches = unroller.episodes(seeds, steps)
    state = unroller.initial_state()
    weights = {n: tf.convert_to_tensor(w) for n, w in weights.items()}
    losses = []
    for start in range(0, steps, unroller.unroll):
        chunk = [tf.constant(b[:, start : start + unroller.unroll]) for b in batches]
        if chunk[0].shape[1] < unroller.unroll:
            raise ValueError(f"steps ({steps}) must be a multiple of unroll ({unroller.unroll})")
        params, state, chunk_losses = unroller.forward_truncation(
            weights, params, state, task, chunk, start, steps if horizon is None else horizon
        )
        losses.append(chunk_losses.numpy())
    return np.concatenate(losses, axis=0).T


def final_loss(losses: np.ndarray, last: int = 10) -> np.ndarray:
    """The protocol's metric: mean loss over the last ``last`` steps, per run."""
    tail = losses[..., -last:]
    return np.where(np.all(np.isfinite(tail), axis=-1), tail.mean(axis=-1), math.inf)
