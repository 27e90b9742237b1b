"""Every benchmark runs end to end with --tiny, so that none of them rots."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
SCRIPTS = ["update_throughput.py", "fit_step_ratio.py", "memory.py", "meta_train_throughput.py",
           "first_order_headroom.py", "update_drift.py"]


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS)
def test_benchmark_runs_tiny(script):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run([sys.executable, str(BENCHMARKS / script), "--tiny"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    table = [line for line in lines if line.startswith("|")]
    assert len(table) >= 3, done.stdout  # header, rule, at least one row
    assert "nan" not in done.stdout.lower(), done.stdout


@pytest.mark.slow
def test_generalization_suite_runs_tiny_on_the_selection_seeds(tmp_path):
    """The suite's tiny run writes its table; --selection runs on its own block of seeds,
    apart from the evaluation seeds of the reported figures and meta-training's validation."""
    import json

    from keras_learned_opt.meta_train import EVALUATION_SEED_BASE, VALIDATION_SEED_BASE

    sys.path.insert(0, str(BENCHMARKS))
    try:
        import generalization
    finally:
        sys.path.remove(str(BENCHMARKS))
    assert generalization.suite_seeds(2) == [EVALUATION_SEED_BASE, EVALUATION_SEED_BASE + 1]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "generalization.py"), "--weights", "paper-fmnist-mlp",
         "--tiny", "--selection", "--out", str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert [r["case"] for r in rows] == ["fmnist_mlp, 20 steps", "small CNN"]
    assert all(r["ratio"] is not None and r["ratio"] > 0 for r in rows), rows
    seeds = json.loads((tmp_path / "fmnist_mlp_20.json").read_text())["seeds"]
    assert seeds == [VALIDATION_SEED_BASE + generalization.SELECTION_OFFSET], seeds
    assert generalization.SELECTION_OFFSET >= 100  # clear of meta-training's validation seeds
    assert "selection seeds" in (tmp_path / "table.md").read_text()


@pytest.mark.slow
def test_quality_benchmark_compares_several_files_on_the_selection_seeds(tmp_path):
    """Candidate files are chosen on the selection seeds, all in one run with one tuning."""
    import json

    from keras_learned_opt.meta_train import VALIDATION_SEED_BASE

    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    out = tmp_path / "q.json"
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "quality.py"), "--weights", "paper-fmnist-mlp",
         "paper-fmnist-mlp-dbd", "--selection", "--seeds", "2", "--steps", "20",
         "--lr-grid", "0.1", "0.3", "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    verdicts = [line for line in done.stdout.splitlines() if "ratio learned / best" in line]
    assert [line.split(":")[0] for line in verdicts] == ["paper-fmnist-mlp",
                                                         "paper-fmnist-mlp-dbd"], done.stdout
    assert json.loads(out.read_text())["seeds"] == [VALIDATION_SEED_BASE + 1000,
                                                    VALIDATION_SEED_BASE + 1001]


def test_generalization_suite_runs_only_the_named_cases(tmp_path, monkeypatch, capsys):
    """--cases picks cases by their JSON stem; an unknown name is refused with the known ones."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import generalization
    finally:
        sys.path.remove(str(BENCHMARKS))
    asked = {}

    def fake_suite(weights, seeds, lr_grid, cases, out, verbose=1, tell_horizon=True):
        asked.update(cases=cases, seeds=seeds, tell_horizon=tell_horizon)
        return [{"weights": weights[0], "case": label, "problem": problem, "steps": steps,
                 "learned_final_loss": 0.5, "best_baseline": "nag", "baseline_learning_rate": 0.3,
                 "baseline_final_loss": 0.5, "ratio": 1.0, "diverged": False, "target": 1.0,
                 "seconds": 0.0} for label, problem, steps in cases]

    monkeypatch.setattr(generalization, "run_suite", fake_suite)
    monkeypatch.setattr(generalization, "plot", lambda rows, path: None)
    assert generalization.main(["--weights", "paper-fmnist-mlp", "--seeds", "20", "--cases",
                                "fmnist_mlp_1000", "fmnist_cnn_100", "--out", str(tmp_path)]) == 0
    assert asked["cases"] == [("fmnist_mlp, 1000 steps", "fmnist_mlp", 1000),
                              ("small CNN", "fmnist_cnn", 100)]
    assert asked["seeds"] == generalization.suite_seeds(20)
    assert asked["tell_horizon"] is True
    assert "| paper-fmnist-mlp | small CNN |" in (tmp_path / "table.md").read_text()
    assert generalization.main(["--weights", "paper-fmnist-mlp", "--cases", "fmnist_cnn_100",
                                "--no-horizon", "--out", str(tmp_path)]) == 0
    assert asked["tell_horizon"] is False
    with pytest.raises(SystemExit) as refused:
        generalization.main(["--cases", "fmnist_mlp_999", "--out", str(tmp_path)])
    assert refused.value.code == 2
    assert "unknown case(s) fmnist_mlp_999" in capsys.readouterr().err
    assert "fmnist_mlp_1000" in generalization.case_slugs(generalization.CASES)


def test_finals_only_keeps_each_runs_final_losses_and_drops_the_curves(tmp_path):
    """The reduced file carries every optimizer's per-seed finals at every rate, the seeds,
    the metadata and the command; not the curves. Anything but a comparison is refused."""
    import json

    import numpy as np

    from keras_learned_opt.compare_result import CompareResult, LrRuns, OptimizerResult

    sys.path.insert(0, str(BENCHMARKS))
    try:
        import finals_only
    finally:
        sys.path.remove(str(BENCHMARKS))
    rng = np.random.default_rng(0)
    runs = {label: [LrRuns(rate, rng.uniform(0.5, 2.0, size=(3, 30))) for rate in rates]
            for label, rates in (("learned:x", [1.0]), ("nag", [0.1, 0.3]))}
    result = CompareResult("fmnist_mlp", 30, [7, 8, 9],
                           [OptimizerResult(label, label == "nag", lr_runs)
                            for label, lr_runs in runs.items()],
                           final_window=10, metadata={"total_steps_told": {"learned:x": 30}})
    full = result.to_json(tmp_path / "case.json")
    reduced = json.loads(finals_only.finals_only(full, "python make-it.py").read_text())
    assert reduced["command"] == "python make-it.py"
    assert reduced["seeds"] == [7, 8, 9] and reduced["steps"] == 30
    assert reduced["metadata"] == {"total_steps_told": {"learned:x": 30}}
    for entry, optimizer in zip(reduced["optimizers"], result.optimizers):
        assert entry["label"] == optimizer.label
        for kept, lr_runs in zip(entry["runs"], optimizer.runs):
            assert set(kept) == {"learning_rate", "final"}
            np.testing.assert_allclose(kept["final"], lr_runs.final)
    assert reduced["markdown"] == result.table()
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"rows": []}))
    with pytest.raises(ValueError, match="not a comparison result"):
        finals_only.finals_only(other, "x")
