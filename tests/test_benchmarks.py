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
