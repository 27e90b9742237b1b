import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from keras_learned_opt import problems
from keras_learned_opt.meta_train import (
    EVALUATION_SEED_BASE,
    VALIDATION_SEED_BASE,
    MetaTrainConfig,
    MetaTrainer,
    meta_train,
)
from keras_learned_opt.network import NetworkConfig
from keras_learned_opt.unroll import evaluate, final_loss
from keras_learned_opt.weights import load_weight_file

SMALL_NET = {"hidden_sizes": [8, 8]}


def _sgd_final_losses(problem, seeds, steps, lr):
    finals = []
    for seed in seeds:
        episode = problem.episode(seed, steps)
        (w, y), x = episode.task, episode.params[0].astype(np.float64)
        losses = []
        for _ in range(steps):
            r = w @ x - y
            losses.append(float(r @ r))
            x = x - lr * 2 * w.T @ r
        finals.append(np.mean(losses[-10:]))
    return np.array(finals)


def test_meta_training_learns_to_beat_sgd_on_quadratics(tmp_path):
    out = tmp_path / "q.h5"
    meta_train(out, problems=["quadratic"], network=SMALL_NET, episodes=60, lanes=4,
               meta_learning_rate=0.01, validate_every=20, verbose=0, seed=1)
    weight_file = load_weight_file(out)
    history = weight_file.provenance["validation_history"]
    assert history[0]["episode"] == 0 and weight_file.provenance["best_episode"] > 0
    assert weight_file.provenance["best_validation_score"] < history[0]["score"] - 1.0
    problem = problems.get_problem("quadratic")
    seeds = [EVALUATION_SEED_BASE + i for i in range(8)]
    learned = final_loss(evaluate(weight_file.arrays, weight_file.config, problem, seeds, 100))
    sgd = _sgd_final_losses(problem, seeds, 100, lr=0.01)
    assert np.mean(learned) < 0.5 * np.mean(sgd), (learned, sgd)


def test_provenance_records_the_run(tmp_path):
    out = tmp_path / "q.h5"
    meta_train(out, problems=["quadratic"], network=SMALL_NET, episodes=4, validate_every=2,
               verbose=0, seed=3, command="my command")
    provenance = load_weight_file(out).provenance
    assert provenance["command"] == "my command"
    assert provenance["problems"] == ["quadratic"] and provenance["seed"] == 3
    assert provenance["steps"] == 100 and provenance["unroll"] == 20
    assert provenance["package_version"] and provenance["date"]
    assert provenance["episodes_run"] == 4


class _PoisonedQuadratic(problems.QuadraticProblem):
    """A quadratic whose task is NaN for one episode's seed."""

    def __init__(self, poisoned_seed):
        super().__init__(name="poisoned_quadratic")
        self.poisoned_seed = poisoned_seed

    def make_task(self, seed):
        w, y = super().make_task(seed)
        if seed == self.poisoned_seed:
            w = w * np.nan
        return w, y


def test_non_finite_meta_step_is_skipped(tmp_path):
    from keras_learned_opt.meta_train import training_seed

    problems.register_problem("poisoned_quadratic",
                              lambda: _PoisonedQuadratic(training_seed(0, 2, 0)), overwrite=True)
    config = MetaTrainConfig(problems=("poisoned_quadratic",), network=SMALL_NET, episodes=5,
                             validate_every=5, meta_learning_rate=0.01)
    trainer = MetaTrainer(config, tmp_path / "p.h5", verbose=0)
    trainer.train()
    assert trainer.skipped_meta_steps == 1
    assert all(np.isfinite(v.numpy()).all() for v in trainer.weights.values())
    assert load_weight_file(tmp_path / "p.h5").provenance["skipped_meta_steps"] == 1


def test_custom_keras_problem_can_be_registered_and_trained(tmp_path):
    import keras
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    data = ((x / 16.0).astype("float32"), y.astype("int32"))

    def build():
        return keras.Sequential([keras.Input((64,)), keras.layers.Dense(10, activation="tanh"),
                                 keras.layers.Dense(10)])

    problems.register_problem("digits_tiny", lambda: problems.KerasProblem(
        "digits_tiny", build, data, batch_size=32), overwrite=True)
    out = meta_train(tmp_path / "d.h5", problems=["digits_tiny", "quadratic"], network=SMALL_NET,
                     episodes=4, steps=20, unroll=10, validate_every=2, verbose=0)
    weight_file = load_weight_file(out)
    assert set(weight_file.provenance["validation_history"][-1]["validation"]) == {
        "digits_tiny", "quadratic"}


def test_checkpoint_of_other_configuration_is_refused(tmp_path):
    out = tmp_path / "q.h5"
    meta_train(out, problems=["quadratic"], network=SMALL_NET, episodes=2, validate_every=1, verbose=0)
    with pytest.raises(ValueError, match="different configuration"):
        meta_train(out, problems=["quadratic"], network=SMALL_NET, episodes=2, validate_every=1,
                   verbose=0, unroll=10)


def _cli(out, episodes):
    return [sys.executable, "-m", "keras_learned_opt.meta_train", "--problem", "quadratic",
            "--out", str(out), "--episodes", str(episodes), "--hidden", "8", "8", "--lanes", "2",
            "--validate-every", "5", "--checkpoint-every", "1", "--meta-lr", "0.01", "--quiet",
            "--threads", "1"]


def _checkpoint_episode(path):
    try:
        with np.load(path) as data:
            return json.loads(bytes(data["meta_json"]).decode())["episode"]
    except (OSError, ValueError, KeyError):
        return -1


@pytest.mark.slow
def test_sigkill_then_same_command_resumes_and_matches_uninterrupted_run(tmp_path):
    episodes = 60
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    straight = tmp_path / "straight.h5"
    subprocess.run(_cli(straight, episodes), check=True, env=env, capture_output=True)

    killed = tmp_path / "killed.h5"
    checkpoint = tmp_path / "killed.h5.ckpt.npz"
    process = subprocess.Popen(_cli(killed, episodes), env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while _checkpoint_episode(checkpoint) < 12 and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    reached = _checkpoint_episode(checkpoint)
    assert 12 <= reached < episodes, "the kill must land mid-run"
    if killed.exists():
        load_weight_file(killed)  # whatever is there is a complete, valid file
    result = subprocess.run(_cli(killed, episodes), env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "resumed" in result.stderr
    a, b = load_weight_file(straight), load_weight_file(killed)
    assert b.provenance["episodes_run"] == episodes
    assert [h["episode"] for h in b.provenance["validation_history"]] == \
        [h["episode"] for h in a.provenance["validation_history"]]
    for name in a.arrays:
        np.testing.assert_allclose(a.arrays[name], b.arrays[name], rtol=1e-5, atol=1e-6)


def test_horizons_draw_episode_lengths(tmp_path):
    config = MetaTrainConfig(problems=("quadratic",), network=SMALL_NET, episodes=6,
                             horizons=(20, 60), validate_every=6)
    lengths = {config.episode_steps(e) for e in range(40)}
    assert lengths == {20, 60}
    trainer = MetaTrainer(config, tmp_path / "h.h5", verbose=0)
    trainer.train()
    expected = sum(config.episode_steps(e) for e in range(6)) * trainer.train_unrollers[(0, 20)].coordinates
    assert trainer.coordinate_steps == expected
    with pytest.raises(ValueError, match="multiple of unroll"):
        MetaTrainConfig(horizons=(30,))


def test_init_from_and_long_unroll_curriculum(tmp_path):
    first = meta_train(tmp_path / "a.h5", problems=["quadratic"], network=SMALL_NET, episodes=3,
                       validate_every=3, verbose=0, meta_learning_rate=0.01)
    start = load_weight_file(first)
    config = MetaTrainConfig(problems=("quadratic",), network=SMALL_NET, episodes=4, unroll=20,
                             long_unroll=(2, 100), init_from=str(first), validate_every=4)
    assert [config.episode_unroll(e) for e in range(4)] == [20, 20, 100, 100]
    trainer = MetaTrainer(config, tmp_path / "b.h5", verbose=0)
    for name, value in start.arrays.items():
        np.testing.assert_array_equal(trainer.weights[name].numpy(), value)
    trainer.train()
    assert set(trainer.train_unrollers) == {(0, 20), (0, 100)}
    assert load_weight_file(tmp_path / "b.h5").provenance["meta_train_config"]["init_from"] == str(first)
    with pytest.raises(ValueError, match="multiple of unroll"):
        MetaTrainConfig(long_unroll=(5, 30))
    with pytest.raises(Exception, match="holds"):
        MetaTrainer(MetaTrainConfig(problems=("quadratic",), network={"hidden_sizes": [4]},
                                    init_from=str(first)), tmp_path / "c.h5", verbose=0)


def test_validation_horizons_score_every_length(tmp_path):
    """--validation-horizons scores each problem at each length; the selection
    score is the mean log final loss over all of them."""
    config = MetaTrainConfig(problems=("quadratic",), network=SMALL_NET, episodes=2, steps=20,
                             validation_horizons=(20, 60), validate_every=2, validation_seeds=2)
    trainer = MetaTrainer(config, tmp_path / "v.h5", verbose=0)
    trainer.train()
    validation = trainer.history[-1]["validation"]
    assert sorted(validation) == ["quadratic@20", "quadratic@60"]
    assert validation["quadratic@20"] != validation["quadratic@60"]
    assert trainer.history[-1]["score"] == pytest.approx(np.mean(np.log(list(validation.values()))))
    # The same numbers as evaluating the current weights directly at each length.
    weights = {n: v.numpy() for n, v in trainer.weights.items()}
    seeds = [VALIDATION_SEED_BASE, VALIDATION_SEED_BASE + 1]
    for steps in (20, 60):
        direct = final_loss(evaluate(weights, trainer.network_config,
                                     problems.get_problem("quadratic"), seeds, steps))
        assert validation[f"quadratic@{steps}"] == pytest.approx(float(np.mean(direct)), rel=1e-5)
    with pytest.raises(ValueError, match="validation horizon"):
        MetaTrainConfig(validation_horizons=(30,))


@pytest.mark.parametrize("weighting", ["uniform", "linear", "final"])
def test_loss_weightings_reduce_a_truncation_as_documented(weighting):
    import tensorflow as tf

    from keras_learned_opt.unroll import Unroller

    unroller = Unroller(problems.get_problem("quadratic"), NetworkConfig(hidden_sizes=(4,)),
                        unroll=20, lanes=2, loss_weighting=weighting)
    losses = np.arange(40, dtype=np.float32).reshape(20, 2)  # [unroll, lanes]
    step0 = 20
    expected = {
        "uniform": losses.mean(),
        "linear": np.sum(losses.mean(axis=1) * np.arange(21, 41)) / np.arange(21, 41).sum(),
        "final": losses[-10:].mean(),
    }[weighting]
    assert float(unroller._reduce(tf.constant(losses), step0)) == pytest.approx(expected)
    with pytest.raises(ValueError, match="loss_weighting"):
        Unroller(problems.get_problem("quadratic"), NetworkConfig(), 20, loss_weighting="last")


def test_second_order_meta_gradient_matches_finite_differences():
    """With second_order the meta-gradient is the true derivative of the truncation's
    meta-loss (central differences along a random direction agree); the paper's
    first-order meta-gradient, which treats the optimizee gradients as inputs, does not."""
    import tensorflow as tf

    from keras_learned_opt.network import initial_weights
    from keras_learned_opt.unroll import Unroller

    problem = problems.get_problem("quadratic")
    config = NetworkConfig(hidden_sizes=(6,), output_scale=0.1)
    rng = np.random.default_rng(0)
    weights = {n: (w + rng.normal(0, 0.3, w.shape)).astype(np.float64)
               for n, w in initial_weights(config, 0).items()}  # a moving output layer
    direction = {n: rng.normal(0, 1, w.shape) for n, w in weights.items()}

    def truncation(unroller, w):
        params, task, batches = unroller.episodes([11], 6)
        return unroller.train_truncation(
            {n: tf.constant(v, tf.float32) for n, v in w.items()}, params,
            unroller.initial_state(), task, [tf.constant(b) for b in batches], 0)

    def along(grads):
        return sum(float(np.sum(grads[n].numpy() * direction[n])) for n in weights)

    second = Unroller(problem, config, unroll=6, second_order=True)
    first = Unroller(problem, config, unroll=6)
    eps = 1e-3
    losses = [float(truncation(first, {n: w + s * eps * direction[n] for n, w in weights.items()})[0])
              for s in (1, -1)]
    numeric = (losses[0] - losses[1]) / (2 * eps)
    exact, paper = along(truncation(second, weights)[1]), along(truncation(first, weights)[1])
    assert abs(exact - numeric) < 0.005 * abs(numeric), (exact, paper, numeric)
    assert abs(paper - numeric) > 5 * abs(exact - numeric), (exact, paper, numeric)
