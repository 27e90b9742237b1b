"""train_problem / ProblemRunner: any Keras optimizer on a problem's seeded episodes."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_learned_opt.optimizer import LearnedOptimizer
from keras_learned_opt.problems import KerasProblem, Problem, get_problem
from keras_learned_opt.runner import ProblemRunner, diverged, train_problem
from keras_learned_opt.unroll import evaluate
from keras_learned_opt.weights import load_weight_file

SEEDS = [3_000_000_000, 3_000_000_001]


def digits_problem(batch_size=32):
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)

    def build():
        return keras.Sequential([keras.Input((64,)), keras.layers.Dense(16, activation="tanh"),
                                 keras.layers.Dense(10)])

    return KerasProblem("digits_mlp", build, ((x / 16).astype("float32"), y.astype("int32")),
                        batch_size=batch_size)


class SpyProblem(Problem):
    """Delegates to another problem and records the parameters and batch of every loss call."""

    def __init__(self, inner):
        self.inner, self.name, self.calls = inner, "spy_" + inner.name, []

    def init_params(self, seed):
        return self.inner.init_params(seed)

    def make_task(self, seed):
        return self.inner.make_task(seed)

    def make_batches(self, seed, steps):
        return self.inner.make_batches(seed, steps)

    def loss(self, params, task, batch):
        def record(*values):
            n = len(params)
            self.calls.append(([v.numpy() for v in values[:n]], [v.numpy() for v in values[n:]]))
            return []

        tf.py_function(record, list(params) + list(batch), [])  # stateful: runs in every step
        return self.inner.loss(params, task, batch)


def test_same_seed_same_initial_weights_and_batches():
    spy = SpyProblem(digits_problem())
    seen = {}
    for name, optimizer in [("adam", keras.optimizers.Adam(1e-2)), ("sgd", keras.optimizers.SGD(0.1))]:
        spy.calls.clear()
        losses = train_problem(spy, optimizer, SEEDS[0], steps=3)
        assert len(spy.calls) == 3
        seen[name] = (spy.calls[0], spy.calls[1][1], losses)
    (params_a, batch_a), second_batch_a, losses_a = seen["adam"]
    (params_s, batch_s), second_batch_s, losses_s = seen["sgd"]
    episode = spy.episode(SEEDS[0], 3)
    for a, s, e in zip(params_a, params_s, episode.params):
        np.testing.assert_array_equal(a, s)
        np.testing.assert_array_equal(a, e)
    np.testing.assert_array_equal(batch_a[0], batch_s[0])
    np.testing.assert_array_equal(batch_a[0], episode.batches[0][0])
    np.testing.assert_array_equal(second_batch_a[0], second_batch_s[0])
    assert losses_a[0] == losses_s[0]  # the loss before any update
    assert losses_a[1] != losses_s[1]  # ...and then they really are different optimizers
    spy.calls.clear()
    train_problem(spy, keras.optimizers.SGD(0.1), SEEDS[1], steps=1)
    assert not np.array_equal(spy.calls[0][1][0], batch_a[0])  # another seed, another batch


def test_losses_are_measured_before_each_update():
    problem = get_problem("quadratic")
    episode = problem.episode(SEEDS[0], 2)
    w, y = episode.task
    x0 = episode.params[0]
    lr = 0.01
    losses = train_problem(problem, keras.optimizers.SGD(lr), SEEDS[0], steps=2)
    x1 = x0 - lr * 2 * w.T @ (w @ x0 - y)
    np.testing.assert_allclose(losses, [np.sum((w @ x0 - y) ** 2), np.sum((w @ x1 - y) ** 2)],
                               rtol=1e-5)


def test_non_finite_run_stops_and_is_diverged():
    losses = train_problem(get_problem("quadratic"), keras.optimizers.SGD(1e3), SEEDS[0], steps=30)
    first_bad = int(np.argmax(~np.isfinite(losses)))
    assert 0 < first_bad < 29
    assert np.all(np.isnan(losses[first_bad + 1:]))
    assert diverged(losses)


def test_divergence_rule():
    assert not diverged(np.array([3.0, 2.0, 1.0]))
    assert diverged(np.array([1.0, 2.0, 3.0]))  # finite, but ends above the start
    assert diverged(np.array([1.0, np.inf, np.nan]))
    np.testing.assert_array_equal(diverged(np.array([[3.0, 1.0], [1.0, 3.0]])), [False, True])


@pytest.mark.parametrize("make", [lambda lr: keras.optimizers.Adam(lr),
                                  lambda lr: keras.optimizers.SGD(lr, momentum=0.9, nesterov=True)],
                         ids=["adam", "nag"])
def test_runner_reuse_matches_fresh_runs(make):
    problem = digits_problem()
    runner = ProblemRunner(problem, make(0.3))
    runner.run(SEEDS[1], 5)  # leaves slots, step count and a rate behind that must not leak
    reused = runner.run(SEEDS[0], 5, learning_rate=0.01)
    fresh = train_problem(problem, make(0.01), SEEDS[0], 5)
    np.testing.assert_allclose(reused, fresh, rtol=1e-6)


def test_built_optimizer_is_rejected():
    optimizer = keras.optimizers.Adam()
    optimizer.build([keras.Variable(np.zeros(3, "float32"))])
    with pytest.raises(ValueError, match="fresh optimizer"):
        train_problem(get_problem("quadratic"), optimizer, SEEDS[0], 2)


@pytest.mark.parametrize("problem", [get_problem("quadratic"), digits_problem()],
                         ids=["quadratic", "digits_mlp"])
def test_learned_optimizer_reproduces_unroll_evaluate(random_weight_file, problem):
    """The Keras optimizer path and the meta-trainer's graph are the same optimizer."""
    weights = load_weight_file(random_weight_file)
    steps = 20
    reference = evaluate(weights.arrays, weights.config, problem, SEEDS, steps, unroll=10)
    assert np.all(np.isfinite(reference))
    runner = ProblemRunner(problem, LearnedOptimizer(random_weight_file, learning_rate=1.0))
    for seed, expected in zip(SEEDS, reference):
        losses = runner.run(seed, steps)
        assert not np.allclose(losses[-1], losses[0], rtol=1e-3)  # the updates matter
        np.testing.assert_allclose(losses, expected, rtol=1e-5)


def test_step_is_traced_once_per_optimizer():
    runner = ProblemRunner(get_problem("quadratic"), keras.optimizers.Adam(0.1))
    for seed, rate in [(SEEDS[0], 0.1), (SEEDS[1], 0.01), (SEEDS[0], 1.0)]:
        runner.run(seed, 3, learning_rate=rate)
    assert runner._step.experimental_get_tracing_count() == 1
