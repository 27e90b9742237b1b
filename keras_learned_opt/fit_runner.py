"""Compare optimizers through ``model.fit``: models with BatchNorm, Dropout and held-out metrics.

``problems.KerasProblem`` evaluates a model functionally, which the meta-trainer
needs but which cannot carry non-trainable state (BatchNormalization's moving
statistics, Dropout's random generator). ``FitProblem`` describes the same kind
of experiment for ``model.fit``, exactly as users train, and ``FitRunner`` runs
its episodes with the protocol of ``runner.ProblemRunner``:

- an episode of seed ``s`` starts from the variables of a fresh model built
  under ``keras.utils.set_random_seed(s)`` (trainable, non-trainable and
  random-generator state alike) and trains on the minibatches
  ``problems.sample_batch_indices(..., s, steps)``, so every optimizer sees the
  same initial weights, the same batches in the same order and the same
  Dropout masks while their weights agree;
- ``losses[t]`` is the minibatch loss of step ``t`` before its update (the
  training-mode forward pass ``model.fit`` computes), and a run stops at the
  first non-finite loss, the rest being nan.

After each run, ``FitRunner.metrics()`` evaluates the trained model on the
problem's held-out sets with ``model.evaluate`` and reports the median step time
and the optimizer's memory; ``compare`` records these next to the loss curves.

Example::

    from keras_learned_opt.compare import compare
    from keras_learned_opt.fit_runner import FitProblem

    problem = FitProblem("resnet", build, (x, y), batch_size=64,
                         eval_data={"test": (x_test, y_test)}, metrics=["accuracy"])
    result = compare(problem, ["learned", "adam"], seeds=3, steps=500)
"""

from __future__ import annotations

import math
import re
import time
from typing import Any, Callable, Mapping, Sequence

import keras
import numpy as np

from keras_learned_opt.optimizer_specs import check_fresh_optimizer
from keras_learned_opt.problems import sample_batch_indices


def default_loss() -> keras.losses.Loss:
    """Softmax cross-entropy on integer labels and logits (``KerasProblem``'s default)."""
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


class FitProblem:
    """A Keras model trained with ``model.fit`` on in-memory data, reproducible from a seed.

    Args:
        name: shown in tables and plots.
        build_model: returns a fresh, built Keras model (default initializers).
        data: ``(x, y)`` training arrays with the same number of rows.
        batch_size: minibatch size.
        loss: anything ``model.compile(loss=...)`` accepts; default softmax
            cross-entropy on integer labels and logits.
        eval_data: named held-out sets ``{name: (x, y)}``; after every run each
            is evaluated with ``model.evaluate`` and reported as
            ``<name>_loss`` and ``<name>_<metric>``.
        metrics: ``model.compile(metrics=...)``, e.g. ``["accuracy"]``.
        eval_batch_size: batch size of ``model.evaluate``.
        jit_compile: passed to ``model.compile``.
    """

    def __init__(
        self,
        name: str,
        build_model: Callable[[], keras.Model],
        data: tuple[np.ndarray, np.ndarray],
        batch_size: int = 128,
        loss: Any = None,
        eval_data: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
        metrics: Sequence[Any] = (),
        eval_batch_size: int = 512,
        jit_compile: Any = "auto",
    ) -> None:
        self.name = name
        self.build_model = build_model
        self.x, self.y = data
        if len(self.x) != len(self.y):
            raise ValueError(f"{name}: x has {len(self.x)} rows but y has {len(self.y)}")
        for set_name, (x, y) in (eval_data or {}).items():
            if len(x) != len(y):
                raise ValueError(f"{name}: eval set '{set_name}' has {len(x)} inputs but {len(y)} targets")
        self.batch_size = batch_size
        self.loss = default_loss() if loss is None else loss
        self.eval_data = dict(eval_data or {})
        self.metrics = list(metrics)
        self.eval_batch_size = eval_batch_size
        self.jit_compile = jit_compile
        self._initial_values: dict[int, list[np.ndarray]] = {}

    def initial_values(self, seed: int) -> list[np.ndarray]:
        """Every variable of a fresh model built under ``seed``, in ``model_variables`` order.

        Includes BatchNorm statistics and Dropout's generator state, so a run
        restarts all of a model's randomness from the seed. Cached per seed:
        every optimizer and learning rate starts from the same values.
        """
        seed = int(seed)
        if seed not in self._initial_values:
            keras.utils.set_random_seed(seed)  # Keras initializers draw from the global seed
            model = self.build_model()
            self._initial_values[seed] = [np.array(v.numpy()) for v in model_variables(model)]
        return self._initial_values[seed]

    def batch_indices(self, seed: int, steps: int) -> np.ndarray:
        """``[steps, batch_size]`` row indices of each step's minibatch."""
        return sample_batch_indices(len(self.x), self.batch_size, int(seed), int(steps))


def model_variables(model: keras.Model) -> list[keras.Variable]:
    """Trainable then non-trainable variables (incl. random-generator state), not metrics."""
    return list(model.trainable_variables) + list(model.non_trainable_variables)


def optimizer_state_bytes(optimizer: keras.optimizers.Optimizer) -> int:
    """Bytes held by the optimizer's variables (slots, step count, learned network...)."""
    total = 0
    for variable in optimizer.variables:
        dtype = str(getattr(variable.dtype, "name", variable.dtype))
        bits = re.search(r"\d+", dtype)
        total += int(np.prod(variable.shape)) * (int(bits.group()) // 8 if bits else 1)
    return total


class _IndexedBatches(keras.utils.PyDataset):
    """Step ``t`` yields ``(x[indices[t]], y[indices[t]])``: the episode's batches, in order."""

    def __init__(self, x: np.ndarray, y: np.ndarray, indices: np.ndarray) -> None:
        super().__init__()  # one worker, no threads: batches come in index order
        self.x, self.y, self.indices = x, y, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        rows = self.indices[step]
        return self.x[rows], self.y[rows]


class _StepRecorder(keras.callbacks.Callback):
    """Records each step's minibatch loss and wall time; stops at a non-finite loss."""

    def __init__(self, steps: int) -> None:
        super().__init__()
        self.losses = np.full(steps, math.nan)
        self.seconds: list[float] = []
        self._started = 0.0

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        # model.fit reports running means over the epoch; emptying the metrics
        # before every step makes logs["loss"] exactly this step's minibatch loss.
        self.model.reset_metrics()
        self._started = time.perf_counter()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        loss = float(logs["loss"])  # also waits for the step to finish (GPU)
        self.seconds.append(time.perf_counter() - self._started)
        self.losses[batch] = loss
        if not math.isfinite(loss):
            self.model.stop_training = True  # diverged: the weights are no longer meaningful


class FitRunner:
    """Runs episodes of a ``FitProblem`` with one optimizer instance and one compiled model.

    The first ``run`` builds and compiles the model and builds the optimizer.
    Later runs (other seeds, other learning rates) put the model's variables
    back to the seed's initial values and every optimizer variable back to
    its value right after ``build``, and reuse the traced training step, as
    ``runner.ProblemRunner`` does.

    Args:
        problem: the problem whose episodes are trained.
        optimizer: a fresh (not yet built) Keras optimizer.
    """

    def __init__(self, problem: FitProblem, optimizer: keras.optimizers.Optimizer) -> None:
        check_fresh_optimizer(optimizer)
        self.problem = problem
        self.optimizer = optimizer
        self.model: keras.Model | None = None
        self._variables: list[keras.Variable] = []
        self._initial_optimizer_values: list[np.ndarray | None] = []
        self._step_seconds: list[float] = []
        self._finished = False

    def _setup(self) -> None:
        self.model = self.problem.build_model()
        # Listed before compile, which may add metric variables that are no part of the model.
        self._variables = model_variables(self.model)
        self.model.compile(optimizer=self.optimizer, loss=self.problem.loss,
                           metrics=self.problem.metrics, jit_compile=self.problem.jit_compile)
        self.optimizer.build(self.model.trainable_variables)
        # Slots start at zero and can be large (a LearnedOptimizer keeps 80 floats per
        # parameter): remember zeros as None instead of copying them.
        self._initial_optimizer_values = [
            None if not np.any(value) else value
            for value in (np.array(v.numpy()) for v in self.optimizer.variables)
        ]

    def _reset(self, seed: int, learning_rate: float | None) -> None:
        values = self.problem.initial_values(seed)
        if [v.shape for v in values] != [tuple(v.shape) for v in self._variables]:
            raise ValueError(
                f"problem '{self.problem.name}': build_model returned models with different variables"
            )
        for variable, value in zip(self._variables, values):
            variable.assign(value)
        variables = self.optimizer.variables
        if len(variables) != len(self._initial_optimizer_values):
            raise RuntimeError("the optimizer created variables after build; it cannot be reused")
        for variable, value in zip(variables, self._initial_optimizer_values):
            variable.assign(keras.ops.zeros(variable.shape, variable.dtype) if value is None else value)
        if learning_rate is not None:
            self.optimizer.learning_rate = float(learning_rate)

    def run(self, seed: int, steps: int, learning_rate: float | None = None) -> np.ndarray:
        """Train the episode of ``seed`` for ``steps`` steps with ``model.fit``.

        Returns:
            ``[steps]`` float64 minibatch losses, entry ``t`` measured before the
            ``t``-th update; after a non-finite loss the rest are nan.
        """
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if self.model is None:
            self._setup()
        self._reset(seed, learning_rate)
        batches = _IndexedBatches(self.problem.x, self.problem.y, self.problem.batch_indices(seed, steps))
        recorder = _StepRecorder(steps)
        # shuffle=False: fit would otherwise shuffle the order of a PyDataset's batches.
        self.model.fit(batches, epochs=1, shuffle=False, verbose=0, callbacks=[recorder])
        self._step_seconds = recorder.seconds
        self._finished = True
        return recorder.losses

    def metrics(self) -> dict[str, float]:
        """Measurements of the model the last ``run`` left.

        ``<set>_loss`` and ``<set>_<metric>`` for each held-out set;
        ``step_ms``: median wall time of a training step in milliseconds
        (the first step, which traces the function, is left out);
        ``optimizer_state_mib``: the optimizer's variables in MiB.
        """
        if not self._finished:
            return {}
        measured: dict[str, float] = {}
        for set_name, (x, y) in self.problem.eval_data.items():
            values = self.model.evaluate(x, y, batch_size=self.problem.eval_batch_size,
                                         verbose=0, return_dict=True)
            measured.update({f"{set_name}_{key}": float(value) for key, value in values.items()})
        steady = self._step_seconds[1:] or self._step_seconds
        measured["step_ms"] = 1000.0 * float(np.median(steady))
        measured["optimizer_state_mib"] = optimizer_state_bytes(self.optimizer) / 2**20
        return measured
