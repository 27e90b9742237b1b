"""Train a problem's episodes with any Keras optimizer, exactly as the protocol defines a run.

A run of ``steps`` steps on seed ``s`` starts from ``problem.episode(s, steps)``:
the parameters become ``keras.Variable`` objects initialised from the episode,
and step ``t`` evaluates the minibatch loss on the episode's ``t``-th batch,
takes its gradient and calls ``optimizer.apply``. Because the episode depends
only on the seed, every optimizer run on the same seed sees the same initial
weights and the same batches in the same order.

The recorded loss at step ``t`` is the loss *before* the ``t``-th update (what
``model.fit`` reports), so ``losses[0]`` is the loss at the initialisation and
is identical for every optimizer.
"""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from keras_learned_opt.optimizer_specs import check_fresh_optimizer
from keras_learned_opt.problems import Problem


class ProblemRunner:
    """Runs episodes of one problem with one optimizer instance, tracing the step once.

    The first ``run`` creates the parameter variables, builds the optimizer and
    traces the training step. Later runs (other seeds, other learning rates)
    reassign the parameters, put every optimizer variable back to its value
    right after ``build`` (slots, step count, the learned network's weights) and
    reuse the traced step, so a learning-rate sweep costs one trace per
    optimizer. This relies on the optimizer keeping all its state in
    ``optimizer.variables``, as every Keras optimizer does.

    Args:
        problem: the problem whose episodes are trained.
        optimizer: a fresh (not yet built) Keras optimizer. A float learning
            rate can be changed per run; a schedule is used as given.
    """

    def __init__(self, problem: Problem, optimizer: keras.optimizers.Optimizer) -> None:
        check_fresh_optimizer(optimizer)
        self.problem = problem
        self.optimizer = optimizer
        self.variables: list[keras.Variable] | None = None
        self._initial_optimizer_values: list[np.ndarray] = []
        self._step = None
        self._last_seed: int | None = None

    def _setup(self, params: list[np.ndarray]) -> None:
        self.variables = [
            keras.Variable(p, name=f"param_{i}", dtype="float32") for i, p in enumerate(params)
        ]
        self.optimizer.build(self.variables)
        # The starting point of every later run (LearnedOptimizer's network weights
        # are optimizer variables too, so they are restored, not zeroed).
        self._initial_optimizer_values = [np.array(v.numpy()) for v in self.optimizer.variables]
        self._step = tf.function(self._train_step, reduce_retracing=False)

    def _train_step(self, task: list[tf.Tensor], batch: list[tf.Tensor]) -> tf.Tensor:
        """One step: loss before the update (scalar); applies the update to the variables."""
        with tf.GradientTape() as tape:
            params = [tf.identity(v.value) for v in self.variables]
            tape.watch(params)
            loss = self.problem.loss(params, task, batch)
        loss = tf.convert_to_tensor(loss)
        if loss.shape.rank != 0:
            raise ValueError(
                f"problem '{self.problem.name}': the loss must be a scalar, got shape "
                f"{loss.shape}; reduce it (e.g. with a mean) over the batch"
            )
        grads = tape.gradient(loss, params)
        missing = [v.path for v, g in zip(self.variables, grads) if g is None]
        if missing:
            raise ValueError(
                f"problem '{self.problem.name}': the loss does not depend on parameters {missing}"
            )
        self.optimizer.apply(grads, self.variables)
        return loss

    def _reset(self, params: list[np.ndarray], learning_rate: float | None) -> None:
        shapes = [tuple(v.shape) for v in self.variables]
        if [p.shape for p in params] != shapes:
            raise ValueError(
                f"problem '{self.problem.name}': episode parameter shapes {[p.shape for p in params]} "
                f"differ from the first run's {shapes}"
            )
        for variable, value in zip(self.variables, params):
            variable.assign(value)
        variables = self.optimizer.variables
        if len(variables) != len(self._initial_optimizer_values):
            raise RuntimeError("the optimizer created variables after build; it cannot be reused")
        for variable, value in zip(variables, self._initial_optimizer_values):
            variable.assign(value)
        if learning_rate is not None:
            self.optimizer.learning_rate = float(learning_rate)

    def run(self, seed: int, steps: int, learning_rate: float | None = None) -> np.ndarray:
        """Train the episode of ``seed`` for ``steps`` steps.

        Returns:
            ``[steps]`` float64 losses, entry ``t`` measured before the ``t``-th
            update. If the loss becomes non-finite the run stops there: that
            entry keeps its value (inf or nan) and the remaining ones are nan.
        """
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        episode = self.problem.episode(int(seed), int(steps))
        if self.variables is None:
            self._setup(episode.params)
        self._reset(episode.params, learning_rate)
        self._last_seed = int(seed)
        task = [tf.constant(a) for a in episode.task]
        losses = np.full(steps, math.nan)
        for t in range(steps):
            batch = [tf.constant(b[t]) for b in episode.batches]
            loss = float(self._step(task, batch))
            losses[t] = loss
            if not math.isfinite(loss):
                break  # diverged: the parameters are no longer meaningful
        return losses

    def metrics(self) -> dict[str, float]:
        """``problem.evaluate`` of the parameters the last ``run`` left (empty before any run)."""
        if self._last_seed is None:
            return {}
        params = [np.asarray(v.numpy()) for v in self.variables]
        measured = self.problem.evaluate(params, self._last_seed)
        return {name: float(value) for name, value in measured.items()}


def train_problem(problem: Problem, optimizer: keras.optimizers.Optimizer, seed: int,
                  steps: int) -> np.ndarray:
    """Train ``problem.episode(seed, steps)`` with ``optimizer``; returns losses ``[steps]``.

    ``optimizer`` is any fresh Keras optimizer instance (``keras.optimizers.Adam(1e-3)``,
    ``LearnedOptimizer(...)``, ...). See ``ProblemRunner.run`` for the meaning of
    the returned losses; to run several seeds or learning rates with one
    optimizer, use ``ProblemRunner`` directly (one trace instead of one per run).
    """
    return ProblemRunner(problem, optimizer).run(seed, steps)


def diverged(losses: Any, final: Any | None = None) -> np.ndarray:
    """Whether each run diverged: a non-finite loss, or a final loss above the starting loss.

    Args:
        losses: ``[..., steps]`` losses as returned by ``train_problem``.
        final: ``[...]`` final losses (default ``unroll.final_loss(losses)``).
    """
    from keras_learned_opt.unroll import final_loss

    losses = np.asarray(losses, dtype=np.float64)
    final = final_loss(losses) if final is None else np.asarray(final, dtype=np.float64)
    finite = np.all(np.isfinite(losses), axis=-1) & np.isfinite(final)
    return ~finite | (final > losses[..., 0])
