"""Optimizee problems: a model, its data stream and its loss, reproducible from a seed.

A problem is evaluated functionally: its parameters are a list of tensors passed
to ``loss(params, task, batch)``, so the meta-trainer can differentiate through
a sequence of updates and every optimizer can be run on identical episodes.

An *episode* of a problem for a seed is fully determined by that seed: the
initial parameters (Keras' default initializers, as users get them), the task
(e.g. the matrix of a quadratic) and the minibatch of every step. Comparing
optimizers on the same seeds therefore compares them on the same
initializations and the same batches.

Register your own problem::

    import keras, numpy as np
    from keras_learned_opt import problems

    def build():
        return keras.Sequential([keras.Input((64,)), keras.layers.Dense(32, activation="tanh"),
                                 keras.layers.Dense(10)])

    x, y = my_features.astype("float32"), my_labels.astype("int32")
    problems.register_problem("my_mlp", lambda: problems.KerasProblem(
        "my_mlp", build, (x, y), batch_size=64))
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Callable, Sequence

import keras
import numpy as np
from keras import ops


@dataclasses.dataclass
class Episode:
    """Everything one optimizee run needs, all numpy.

    ``params``: initial parameters; ``task``: arrays constant over the episode;
    ``batches``: arrays whose leading dimension is the step.
    """

    params: list[np.ndarray]
    task: tuple[np.ndarray, ...]
    batches: tuple[np.ndarray, ...]


class Problem:
    """Base class of optimizee problems. Subclasses define the four methods below."""

    name: str = "problem"
    batch_size: int = 0

    def init_params(self, seed: int) -> list[np.ndarray]:
        raise NotImplementedError

    def make_task(self, seed: int) -> tuple[np.ndarray, ...]:
        return ()

    def make_batches(self, seed: int, steps: int) -> tuple[np.ndarray, ...]:
        raise NotImplementedError

    def loss(self, params: Sequence[Any], task: Sequence[Any], batch: Sequence[Any]) -> Any:
        """Scalar loss of ``params`` on one step's ``batch`` (keras.ops, differentiable)."""
        raise NotImplementedError

    def episode(self, seed: int, steps: int) -> Episode:
        return Episode(self.init_params(seed), self.make_task(seed), self.make_batches(seed, steps))

    def evaluate(self, params: Sequence[np.ndarray], seed: int) -> dict[str, float]:
        """Measurements of trained ``params`` beyond the training loss (e.g. held-out loss).

        ``compare`` records them for every run next to its loss curve. The
        default measures nothing; override to report, say, a test-set loss.
        """
        return {}

    @property
    def parameter_shapes(self) -> list[tuple[int, ...]]:
        if getattr(self, "_parameter_shapes", None) is None:
            self._parameter_shapes = [tuple(p.shape) for p in self.init_params(0)]
        return self._parameter_shapes

    @property
    def parameter_count(self) -> int:
        return int(sum(np.prod(s) for s in self.parameter_shapes))


class QuadraticProblem(Problem):
    """Random least squares ``||W x - y||^2`` (Andrychowicz et al. 2016, section 3.1).

    ``W`` (dim x dim) and ``y`` (dim) are standard normal per episode; ``x``
    starts standard normal. The loss is deterministic, so batches are empty.
    """

    def __init__(self, dim: int = 10, name: str = "quadratic") -> None:
        self.dim = dim
        self.name = name

    def init_params(self, seed: int) -> list[np.ndarray]:
        rng = np.random.default_rng([seed, 0])
        return [rng.standard_normal(self.dim).astype(np.float32)]

    def make_task(self, seed: int) -> tuple[np.ndarray, ...]:
        rng = np.random.default_rng([seed, 1])
        w = rng.standard_normal((self.dim, self.dim)).astype(np.float32)
        y = rng.standard_normal(self.dim).astype(np.float32)
        return (w, y)

    def make_batches(self, seed: int, steps: int) -> tuple[np.ndarray, ...]:
        return (np.zeros((steps,), np.float32),)

    def loss(self, params, task, batch):
        w, y = task
        residual = ops.matmul(w, params[0]) - y
        return ops.sum(ops.square(residual))


def sample_batch_indices(rows: int, batch_size: int, seed: int, steps: int) -> np.ndarray:
    """``[steps, batch_size]`` int32 row indices of each step's minibatch, a function of the seed.

    Each minibatch is drawn without replacement, independently per step. Shared
    by ``KerasProblem`` and ``fit_runner.FitProblem`` so that both see the same
    batches for the same seed.
    """
    if batch_size > rows:
        raise ValueError(f"batch size {batch_size} is larger than the dataset ({rows} rows)")
    rng = np.random.default_rng([seed, 2])
    indices = np.stack([rng.choice(rows, batch_size, replace=False) for _ in range(steps)])
    return indices.astype(np.int32)


def softmax_cross_entropy(labels, logits):
    """Mean sparse softmax cross-entropy from logits."""
    return ops.mean(
        keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
    )


class KerasProblem(Problem):
    """A Keras model trained on an in-memory dataset with minibatches sampled per seed.

    Args:
        name: registry name.
        build_model: returns a fresh, built Keras model (default initializers).
        data: ``(x, y)`` numpy arrays; ``x`` float, ``y`` labels or targets.
        batch_size: minibatch size.
        loss_fn: ``(y_true, y_pred) -> scalar``; default softmax cross-entropy
            on integer labels and logits.
    """

    def __init__(
        self,
        name: str,
        build_model: Callable[[], keras.Model],
        data: tuple[np.ndarray, np.ndarray],
        batch_size: int = 128,
        loss_fn: Callable[[Any, Any], Any] = softmax_cross_entropy,
    ) -> None:
        self.name = name
        self.build_model = build_model
        self.x, self.y = data
        if len(self.x) != len(self.y):
            raise ValueError(f"{name}: x has {len(self.x)} rows but y has {len(self.y)}")
        self.batch_size = batch_size
        self.loss_fn = loss_fn
        self._model = None
        self._x_tensor = None

    @property
    def model(self) -> keras.Model:
        if self._model is None:
            self._model = self.build_model()
            if self._model.non_trainable_variables:
                raise ValueError(
                    f"{self.name}: models with non-trainable state (e.g. BatchNormalization) are "
                    "not supported by functional problems; train them with model.fit "
                    "(keras_learned_opt.fit_runner.FitProblem, or compare(..., fit=True))"
                )
        return self._model

    def init_params(self, seed: int) -> list[np.ndarray]:
        # Keras initializers draw from the global seed: build a fresh copy under it.
        keras.utils.set_random_seed(int(seed))
        model = self.build_model()
        params = [np.asarray(v.numpy(), np.float32) for v in model.trainable_variables]
        self.model  # noqa: B018 - make sure the template exists for loss()
        return params

    def make_batches(self, seed: int, steps: int) -> tuple[np.ndarray, ...]:
        return (sample_batch_indices(len(self.x), self.batch_size, seed, steps),)

    def _data_tensors(self):
        if self._x_tensor is None:
            # Created eagerly even when first asked for inside a traced function,
            # so graphs capture the dataset instead of embedding it as a constant.
            with _eager_scope():
                self._x_tensor = ops.convert_to_tensor(self.x)
                self._y_tensor = ops.convert_to_tensor(self.y)
        return self._x_tensor, self._y_tensor

    def loss(self, params, task, batch):
        x_all, y_all = self._data_tensors()
        (indices,) = batch
        x = ops.take(x_all, indices, axis=0)
        y = ops.take(y_all, indices, axis=0)
        outputs, _ = self.model.stateless_call(list(params), [], x)
        loss = self.loss_fn(y, outputs)
        if len(ops.shape(loss)) != 0:
            raise ValueError(
                f"{self.name}: the loss must be a scalar, got shape {ops.shape(loss)}; "
                "reduce it (e.g. with a mean) over the batch"
            )
        return loss


class ScaledProblem(Problem):
    """A problem seen through a random per-coordinate rescaling of its parameters.

    The optimizer trains ``u`` while the loss is ``base.loss(c * u)`` with
    ``log c ~ U(-log_range, log_range)`` drawn per coordinate and per episode,
    and ``u`` starts at ``theta_0 / c`` so the model starts where Keras puts it.
    Gradients are scaled by ``c`` and good steps by ``1 / c``, so an optimizer
    meta-trained on it cannot lean on one fixed scale (Lv et al. 2017, sec. 3.2).
    """

    def __init__(self, base: Problem, log_range: float = 3.0) -> None:
        self.base = base
        self.log_range = log_range
        self.name = f"{base.name}@scaled{log_range:g}"
        self.batch_size = base.batch_size

    def _scales(self, seed: int) -> list[np.ndarray]:
        rng = np.random.default_rng([seed, 3])
        return [np.exp(rng.uniform(-self.log_range, self.log_range, shape)).astype(np.float32)
                for shape in self.base.parameter_shapes]

    def init_params(self, seed: int) -> list[np.ndarray]:
        return [p / c for p, c in zip(self.base.init_params(seed), self._scales(seed))]

    def make_task(self, seed: int) -> tuple[np.ndarray, ...]:
        return tuple(self.base.make_task(seed)) + tuple(self._scales(seed))

    def make_batches(self, seed: int, steps: int) -> tuple[np.ndarray, ...]:
        return self.base.make_batches(seed, steps)

    def loss(self, params, task, batch):
        count = len(params)
        base_task, scales = task[: len(task) - count], task[len(task) - count :]
        return self.base.loss([p * c for p, c in zip(params, scales)], base_task, batch)


def _eager_scope():
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.init_scope()
    return contextlib.nullcontext()


_REGISTRY: dict[str, Callable[[], Problem]] = {}
_CACHE: dict[str, Problem] = {}


def register_problem(name: str, factory: Callable[[], Problem], overwrite: bool = False) -> None:
    """Make ``get_problem(name)`` return ``factory()`` (built once, on first use)."""
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"problem '{name}' is already registered (pass overwrite=True)")
    _REGISTRY[name] = factory
    _CACHE.pop(name, None)


def get_problem(name: str | Problem) -> Problem:
    if isinstance(name, Problem):
        return name
    if name not in _REGISTRY and "@scaled" in name:
        base, _, log_range = name.partition("@scaled")
        register_problem(name, lambda: ScaledProblem(get_problem(base), float(log_range or 3.0)))
    if name not in _REGISTRY:
        raise ValueError(f"unknown problem '{name}'; registered: {sorted(_REGISTRY)}")
    if name not in _CACHE:
        _CACHE[name] = _REGISTRY[name]()
    return _CACHE[name]


def list_problems() -> list[str]:
    return sorted(_REGISTRY)


_FMNIST: tuple[np.ndarray, np.ndarray] | None = None


def fashion_mnist_train(flat: bool) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST training images scaled to [0, 1], flat (784) or 28x28x1."""
    global _FMNIST
    if _FMNIST is None:
        from keras_learned_opt.data import load_fashion_mnist

        (x, y), _ = load_fashion_mnist()
        _FMNIST = (x.astype(np.float32) / 255.0, y.astype(np.int32))
    x, y = _FMNIST
    return (x.reshape(len(x), -1), y) if flat else (x[..., None], y)


def mlp_builder(hidden: Sequence[int] = (20,), activation: str = "sigmoid",
                inputs: int = 784, classes: int = 10) -> Callable[[], keras.Model]:
    def build() -> keras.Model:
        layers = [keras.Input((inputs,))]
        layers += [keras.layers.Dense(units, activation=activation) for units in hidden]
        layers.append(keras.layers.Dense(classes))
        return keras.Sequential(layers)

    return build


def small_cnn(input_shape: Sequence[int] = (28, 28, 1), classes: int = 10) -> keras.Model:
    """conv(8)-pool-conv(16)-pool-dense(classes), ReLU; images ``[batch, *input_shape]`` -> logits."""
    return keras.Sequential([
        keras.Input(tuple(input_shape)),
        keras.layers.Conv2D(8, 3, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(16, 3, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dense(classes),
    ])


def _register_builtins() -> None:
    register_problem("quadratic", QuadraticProblem)
    mlps = {
        "fmnist_mlp": ((20,), "sigmoid"),
        "fmnist_mlp_relu": ((20,), "relu"),
        "fmnist_mlp_tanh": ((20,), "tanh"),
        "fmnist_mlp_deep": ((20, 20), "sigmoid"),
        "fmnist_mlp_wide": ((80,), "sigmoid"),
    }
    for name, (hidden, activation) in mlps.items():
        register_problem(name, lambda name=name, hidden=hidden, activation=activation: KerasProblem(
            name, mlp_builder(hidden, activation), fashion_mnist_train(flat=True), batch_size=128))
    register_problem("fmnist_cnn", lambda: KerasProblem(
        "fmnist_cnn", small_cnn, fashion_mnist_train(flat=False), batch_size=128))


_register_builtins()
