"""keras_learned_opt.compare: tuning, selection, divergence, table/JSON/CSV/plot, CLI, errors."""

import csv
import json
import math

import keras
import numpy as np
import pytest
from keras import ops

from keras_learned_opt.compare import compare, main
from keras_learned_opt.compare_result import CompareResult
from keras_learned_opt.problems import Problem

from test_runner import digits_problem


class ScaledBowl(Problem):
    """``0.5 * a * ||x - c||^2 + 1``: SGD with rate ``1/a`` lands on the minimum in one step.

    With ``a = 10`` on the default grid, 0.1 is optimal (final loss exactly the
    minimum, 1); smaller rates converge more slowly; 0.3 and 1.0 overshoot
    (|1 - lr * a| > 1) so their loss grows: diverged.
    """

    name = "scaled_bowl"

    def __init__(self, curvature=10.0, dim=4):
        self.curvature, self.dim = curvature, dim

    def init_params(self, seed):
        return [np.random.default_rng([seed, 0]).standard_normal(self.dim).astype("float32")]

    def make_task(self, seed):
        return (np.random.default_rng([seed, 1]).standard_normal(self.dim).astype("float32"),)

    def make_batches(self, seed, steps):
        return (np.zeros(steps, "float32"),)

    def loss(self, params, task, batch):
        return 0.5 * self.curvature * ops.sum(ops.square(params[0] - task[0])) + 1.0


def _table_rows(markdown):
    """Parse the summary table's body rows into lists of cells."""
    lines = [line for line in markdown.splitlines() if line.startswith("| ")]
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines[1:]]


def _assert_cell(cell, value, rel=1e-3):
    assert value is not None, cell
    assert float(cell) == pytest.approx(value, rel=rel), (cell, value)


def test_cli_end_to_end_table_matches_json(tmp_path, capsys, sign_descent_file):
    out = tmp_path / "results.json"
    code = main(["--problem", "quadratic", "--optimizer", f"learned:{sign_descent_file}",
                 "--optimizer", "sgd,adam", "--seeds", "2", "--steps", "12",
                 "--lr-grid", "0.001", "0.01", "0.1", "--out", str(out), "--quiet"])
    assert code == 0
    printed = capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data["seeds"] == [3_000_000_000, 3_000_000_001]
    assert [o["label"] for o in data["optimizers"]] == [f"learned:{sign_descent_file}", "sgd", "adam"]
    assert [len(o["runs"]) for o in data["optimizers"]] == [1, 3, 3]
    assert data["optimizers"][0]["runs"][0]["learning_rate"] == 1.0
    # Same seeds => the same starting loss for every optimizer and rate.
    starts = {row[0] for o in data["optimizers"] for r in o["runs"] for row in r["losses"][:1]}
    assert len(starts) == 1
    assert all(np.shape(r["losses"]) == (2, 12) for o in data["optimizers"] for r in o["runs"])

    assert data["markdown"] in printed
    rows = _table_rows(printed)
    assert [r[0] for r in rows] == [t["optimizer"] for t in data["table"]]
    best_baseline = min(t["mean"] for t in data["table"][1:] if not t["diverged"])
    for cells, row in zip(rows, data["table"]):
        if row["diverged"]:
            assert cells[2] == "diverged" and cells[6] == "diverged"
            continue
        for cell, key in zip(cells[1:6], ["learning_rate", "mean", "std", "min", "max"]):
            _assert_cell(cell, row[key])
        _assert_cell(cells[6], row["ratio_to_best_baseline"])
        assert row["ratio_to_best_baseline"] == pytest.approx(row["mean"] / best_baseline)
        # The reported mean is the mean over seeds of the last-10-step mean.
        run = next(r for o in data["optimizers"] if o["label"] == row["optimizer"]
                   for r in o["runs"] if r["learning_rate"] == row["learning_rate"])
        assert row["mean"] == pytest.approx(np.mean(np.array(run["losses"])[:, -10:]), rel=1e-6)

    with open(tmp_path / "results.csv") as handle:
        table = list(csv.DictReader(handle))
    assert [t["optimizer"] for t in table] == [t["optimizer"] for t in data["table"]]
    with open(tmp_path / "results_curves.csv") as handle:
        assert sum(1 for _ in handle) == 1 + (1 + 3 + 3) * 2 * 12


def test_tuner_picks_the_analytically_best_rate():
    result = compare(ScaledBowl(), ["sgd"], seeds=2, steps=12, verbose=0)  # default grid
    (sgd,) = result.optimizers
    assert [r.learning_rate for r in sgd.runs] == [1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0]
    assert sgd.best.learning_rate == 0.1
    assert sgd.best.mean == pytest.approx(1.0, abs=1e-5)
    assert sgd.diverged_rates == [0.3, 1.0]  # overshooting rates are excluded, not selected
    assert result.rows()[0]["ratio_to_best_baseline"] == pytest.approx(1.0)


def test_diverged_optimizer_is_reported_as_diverged(tmp_path):
    # nag at 1.0 grows without bound but stays finite; sgd at 1e3 overflows to inf.
    finite_growth = compare(ScaledBowl(), ["nag", "adam"], seeds=2, steps=12,
                            lr_grid=[1.0], verbose=0)
    overflow = compare("quadratic", ["sgd"], seeds=2, steps=40, lr_grid=[1e3], verbose=0)
    assert np.isfinite(finite_growth.optimizers[0].runs[0].losses).all()
    assert not np.isfinite(overflow.optimizers[0].runs[0].losses).all()
    for result in (finite_growth, overflow):
        row = result.rows()[0]
        assert row["diverged"] and row["learning_rate"] is None and row["mean"] is None
        assert row["ratio_to_best_baseline"] is None
        cells = _table_rows(result.table())[0]
        assert cells[1:7] == ["—", "diverged", "—", "—", "—", "diverged"]
        result.to_json(tmp_path / "r.json")
        data = json.loads((tmp_path / "r.json").read_text())  # strict JSON: no NaN/Infinity
        assert data["table"][0]["diverged"] and data["table"][0]["mean"] is None
    # adam still gets a number, and is the baseline the ratio refers to.
    assert finite_growth.best_baseline().label == "adam"


def test_replot_without_rerunning(tmp_path, capsys):
    result = compare("quadratic", ["sgd", "nag"], seeds=2, steps=10, lr_grid=[0.003, 0.01], verbose=0)
    result.to_json(tmp_path / "r.json")
    again = CompareResult.from_json(tmp_path / "r.json")
    assert again.table() == result.table()
    assert main(["--replot", str(tmp_path / "r.json"), "--plot", str(tmp_path / "curves.png")]) == 0
    assert result.table() in capsys.readouterr().out
    png = (tmp_path / "curves.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5000


def test_user_model_and_dataset():
    problem = digits_problem()
    result = compare(problem.build_model, ["adam"], seeds=[1, 2], steps=10, lr_grid=[0.01],
                     data=(problem.x, problem.y), batch_size=32, verbose=0)
    assert result.problem == "build"
    assert result.optimizers[0].best.mean < result.optimizers[0].runs[0].losses[0, 0]


# ----- bad input ---------------------------------------------------------------------
def test_unknown_optimizer_spec():
    with pytest.raises(ValueError, match="unknown optimizer spec 'adagrad'"):
        compare("quadratic", ["adam", "adagrad"], seeds=1, steps=2, verbose=0)


def test_empty_grid(capsys):
    with pytest.raises(ValueError, match="grid is empty"):
        compare("quadratic", ["sgd"], seeds=1, steps=2, lr_grid=[], verbose=0)
    assert main(["--problem", "quadratic", "--optimizer", "sgd", "--lr-grid"]) == 2
    assert "grid is empty" in capsys.readouterr().err


def test_learned_with_missing_file(tmp_path, capsys):
    missing = tmp_path / "nope.h5"
    with pytest.raises(FileNotFoundError, match="nope.h5"):
        compare("quadratic", ["adam", f"learned:{missing}"], seeds=1, steps=2, verbose=0)
    assert main(["--problem", "quadratic", "--optimizer", f"learned:{missing}"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_model_whose_loss_is_not_scalar():
    problem = digits_problem()

    def per_example_loss(y, logits):  # forgot to reduce over the batch
        return keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)

    with pytest.raises(ValueError, match="must be a scalar"):
        compare(problem.build_model, ["sgd"], seeds=1, steps=2, lr_grid=[0.1],
                data=(problem.x, problem.y), loss_fn=per_example_loss, verbose=0)


def test_learned_optimizers_that_read_the_horizon_are_told_the_steps(tmp_path, paper_config):
    """A horizon_input file gets total_steps=steps (as a user who knows the run's length
    would give it), recorded in the result; --no-horizon leaves it untold, and the two
    runs differ. Files without the input are never told anything."""
    import dataclasses

    from keras_learned_opt.network import initial_weights
    from keras_learned_opt.weights import save_weight_file

    config = dataclasses.replace(paper_config, horizon_input=True)
    rng = np.random.default_rng(5)
    weights = {k: rng.normal(0, 0.3, v.shape).astype("float32")
               for k, v in initial_weights(config).items()}
    path = tmp_path / "horizon.h5"
    save_weight_file(path, weights, config, provenance={}, description="random (tests only)")
    spec = f"learned:{path}"
    told = compare("quadratic", [spec, "sgd"], seeds=1, steps=12, lr_grid=[0.01], verbose=0)
    untold = compare("quadratic", [spec], seeds=1, steps=12, verbose=0, tell_horizon=False)
    assert told.metadata["total_steps_told"] == {spec: 12}
    assert untold.metadata["total_steps_told"] == {spec: None}
    curves = [r.optimizers[0].runs[0].losses for r in (told, untold)]
    assert np.all(np.isfinite(curves[0])) and np.all(np.isfinite(curves[1]))
    assert np.max(np.abs(curves[0] - curves[1])) > 0
    out = tmp_path / "r.json"
    assert main(["--problem", "quadratic", "--optimizer", spec, "--seeds", "1", "--steps", "12",
                 "--no-horizon", "--out", str(out), "--quiet"]) == 0
    assert json.loads(out.read_text())["metadata"]["total_steps_told"] == {spec: None}
    save_weight_file(tmp_path / "plain.h5", initial_weights(paper_config), paper_config,
                     provenance={}, description="zero (tests only)")
    plain = compare("quadratic", [f"learned:{tmp_path / 'plain.h5'}"], seeds=1, steps=12,
                    verbose=0)
    assert "total_steps_told" not in plain.metadata
