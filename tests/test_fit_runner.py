"""fit_runner: model.fit episodes with the runner's protocol; per-run metrics in compare."""

import json

import keras
import numpy as np
import pytest

from keras_learned_opt.compare import compare
from keras_learned_opt.compare_result import CompareResult
from keras_learned_opt.fit_runner import FitProblem, FitRunner, optimizer_state_bytes
from keras_learned_opt.optimizer import LearnedOptimizer
from keras_learned_opt.runner import ProblemRunner

from test_runner import SEEDS, digits_problem


def bn_dropout_model():
    return keras.Sequential([keras.Input((64,)), keras.layers.Dense(16), keras.layers.BatchNormalization(),
                             keras.layers.Activation("relu"), keras.layers.Dropout(0.3), keras.layers.Dense(10)])


def digits_fit_problem(build=bn_dropout_model, **options):
    digits = digits_problem()
    x, y = digits.x, digits.y
    return FitProblem("digits_fit", build, (x[:1500], y[:1500]), batch_size=32,
                      eval_data={"test": (x[1500:], y[1500:])}, metrics=["accuracy"], **options)


def test_same_seed_same_start_and_reruns_are_identical():
    problem = digits_fit_problem()
    adam = FitRunner(problem, keras.optimizers.Adam(0.01))
    first = adam.run(SEEDS[0], 8)
    other_seed = adam.run(SEEDS[1], 8)
    again = adam.run(SEEDS[0], 8)  # weights, BatchNorm statistics, Dropout generator and slots reset
    sgd = FitRunner(problem, keras.optimizers.SGD(0.1)).run(SEEDS[0], 8)
    np.testing.assert_array_equal(first, again)
    assert sgd[0] == first[0]  # same initial weights, first batch and Dropout mask
    assert other_seed[0] != first[0]
    assert np.all(np.isfinite(first)) and first[-1] < first[0]


def test_fit_matches_the_functional_runner():
    # Without BatchNorm or Dropout, model.fit and the functional path train the
    # same episode: same initial weights, same batches, same updates.
    functional = digits_problem()
    fit = FitProblem("digits_fit", functional.build_model, (functional.x, functional.y), batch_size=32)
    expected = ProblemRunner(functional, keras.optimizers.SGD(0.5)).run(SEEDS[0], 12)
    losses = FitRunner(fit, keras.optimizers.SGD(0.5)).run(SEEDS[0], 12)
    np.testing.assert_allclose(losses, expected, rtol=1e-4)


def test_metrics_after_a_run(sign_descent_file):
    problem = digits_fit_problem()
    parameters = sum(int(np.prod(v.shape)) for v in bn_dropout_model().trainable_variables)
    runner = FitRunner(problem, LearnedOptimizer(sign_descent_file))
    assert runner.metrics() == {}
    runner.run(SEEDS[0], 5)
    measured = runner.metrics()
    assert set(measured) == {"test_loss", "test_accuracy", "step_ms", "optimizer_state_mib"}
    assert 0.0 <= measured["test_accuracy"] <= 1.0 and measured["step_ms"] > 0
    # 2 LSTM layers x (hidden + cell) x 20 units, float32, per parameter, plus the network itself.
    assert optimizer_state_bytes(runner.optimizer) > 80 * 4 * parameters
    assert measured["optimizer_state_mib"] == optimizer_state_bytes(runner.optimizer) / 2**20


def test_divergence_stops_the_run_and_is_not_measured():
    problem = digits_fit_problem()
    seen = []
    result = compare(problem, ["sgd", "adam"], seeds=[SEEDS[0]], steps=30, lr_grid=[1e12, 0.01], verbose=0,
                     on_run_end=lambda label, rate, seed, runner: seen.append((label, rate, seed)))
    assert seen == [("sgd", 1e12, SEEDS[0]), ("sgd", 0.01, SEEDS[0]),
                    ("adam", 1e12, SEEDS[0]), ("adam", 0.01, SEEDS[0])]
    blown = result.optimizers[0].runs[0]
    stop = int(np.argmax(~np.isfinite(blown.losses[0])))
    assert 0 < stop < 29 and np.all(np.isnan(blown.losses[0, stop + 1:]))
    assert blown.metrics == {}  # nothing meaningful to measure after a non-finite loss
    assert set(result.optimizers[0].runs[1].metrics) >= {"test_accuracy", "step_ms"}
    assert result.optimizers[0].best.learning_rate == 0.01


def test_compare_reports_metrics_at_the_selected_rate(tmp_path):
    digits = digits_problem()
    result = compare(bn_dropout_model, ["adam"], seeds=2, steps=10, lr_grid=[0.001, 0.03],
                     data=(digits.x, digits.y), batch_size=32, fit=True, verbose=0,
                     metadata={"note": "test"})
    (row,) = result.rows()
    best = result.optimizers[0].best
    assert set(row["metrics"]) == {"step_ms", "optimizer_state_mib"}  # no held-out set given
    assert row["metrics"]["step_ms"]["mean"] == pytest.approx(np.mean(best.metrics["step_ms"]))
    assert "step_ms (mean ± std)" in result.table()

    result.to_json(tmp_path / "r.json")
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["metadata"] == {"note": "test"}
    again = CompareResult.from_json(tmp_path / "r.json")
    assert again.table() == result.table() and again.metadata == result.metadata
    np.testing.assert_allclose(again.optimizers[0].runs[1].metrics["optimizer_state_mib"],
                               result.optimizers[0].runs[1].metrics["optimizer_state_mib"])
    result.to_csv(tmp_path / "r.csv")
    assert "step_ms_mean" in (tmp_path / "r.csv").read_text().splitlines()[0]
    png = result.plot(tmp_path / "r.png", legend_metric="step_ms").read_bytes()
    assert png.startswith(b"\x89PNG")


def test_functional_problem_refuses_batchnorm_and_points_to_fit():
    digits = digits_problem()
    with pytest.raises(ValueError, match="fit=True"):
        compare(bn_dropout_model, ["sgd"], seeds=1, steps=2, lr_grid=[0.1], data=(digits.x, digits.y),
                verbose=0)
