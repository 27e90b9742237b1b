"""examples/: each computer-vision example runs end to end in a reduced form.

They run as function calls (``main(argv)``) with a few steps, one seed and one
learning rate, and a small weight file made by the fixtures, since no
pretrained file is bundled yet. The checks: exit code 0, the JSON, CSV and PNG
files exist, every loss and metric is finite, and every optimizer started from
the same loss (same initial weights and first batch).
"""

import importlib
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture
def load_example(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))  # examples import their sibling _common

    def load(name):
        sys.modules.pop(name, None)
        return importlib.import_module(name)

    return load


def _check_outputs(out: Path, stem: str, labels: list[str], steps: int, metrics: set[str]) -> dict:
    data = json.loads((out / f"{stem}.json").read_text())
    assert [o["label"] for o in data["optimizers"]] == labels
    starts = set()
    for optimizer in data["optimizers"]:
        for run in optimizer["runs"]:
            losses = np.array(run["losses"], dtype=float)
            assert losses.shape == (1, steps) and np.all(np.isfinite(losses)), (optimizer["label"], losses)
            starts.add(losses[0, 0])
            assert metrics <= set(run["metrics"]), (metrics, run["metrics"])
            assert all(math.isfinite(v) for values in run["metrics"].values() for v in values)
    assert len(starts) == 1  # same initial weights and first batch for every optimizer
    assert data["metadata"]["command"].startswith("python examples/")
    assert data["metadata"]["wall_seconds"] > 0
    for name in (f"{stem}.csv", f"{stem}_curves.csv"):
        assert (out / name).stat().st_size > 0
    assert (out / f"{stem}.png").read_bytes().startswith(b"\x89PNG")
    return data


@pytest.mark.slow
def test_fashion_mnist_classifiers(load_example, tmp_path, sign_descent_file, capsys):
    example = load_example("fashion_mnist_classifiers")
    code = example.main(["--steps", "4", "--seeds", "1", "--lr-grid", "0.01", "--baselines", "adam",
                         "--train-size", "512", "--test-size", "256", "--batch-size", "32",
                         "--weights", str(sign_descent_file), "--out", str(tmp_path), "--quiet"])
    assert code == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    for model in ("mlp", "cnn"):
        data = _check_outputs(tmp_path, f"fashion_mnist_{model}", ["learned:sign_descent", "adam"], 4,
                              {"test_accuracy", "test_loss", "step_ms", "optimizer_state_mib"})
        assert data["metadata"]["test_images"] == 256
        assert data["markdown"] in printed
        accuracies = [v for o in data["optimizers"] for r in o["runs"] for v in r["metrics"]["test_accuracy"]]
        assert all(0.0 <= a <= 1.0 for a in accuracies)


@pytest.mark.slow
def test_mobilenet(load_example, tmp_path, sign_descent_file, capsys):
    # The learned optimizer only: tracing its update for ~140 variables is what costs
    # time here; Adam goes through the same FitRunner in the classifier test.
    example = load_example("mobilenet")
    code = example.main(["--steps", "3", "--seeds", "1", "--baselines", "", "--batch-size", "16",
                         "--train-size", "256", "--test-size", "32",
                         "--weights", str(sign_descent_file), "--out", str(tmp_path), "--quiet"])
    assert code == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    data = _check_outputs(tmp_path, "mobilenet_v3_small", ["learned:sign_descent"], 3,
                          {"test_accuracy", "step_ms", "optimizer_state_mib"})
    facts = data["metadata"]
    assert facts["parameters"] > 1_000_000 and facts["trainable_variables"] > 100
    assert facts["batch_norm_layers"] > 0 and facts["depthwise_conv_layers"] > 0
    state = data["optimizers"][0]["runs"][0]["metrics"]["optimizer_state_mib"][0]
    assert state * 2**20 > 80 * 4 * facts["parameters"]  # 2 layers x (h, c) x 20 units of float32
    assert facts["cost_table"] in printed and "state bytes per parameter" in printed


@pytest.mark.slow
def test_spatial_transformer(load_example, tmp_path, sign_descent_file, capsys):
    example = load_example("spatial_transformer")
    code = example.main(["--steps", "5", "--seeds", "1", "--lr-grid", "0.003", "--baselines", "adam",
                         "--train-pairs", "256", "--eval-pairs", "64",
                         "--weights", str(sign_descent_file), "--out", str(tmp_path), "--quiet"])
    assert code == 0, capsys.readouterr().err
    data = _check_outputs(tmp_path, "stn_alignment", ["learned:sign_descent", "adam"], 5,
                          {"heldout_images_loss", "heldout_classes_loss", "step_ms"})
    references = data["metadata"]["references"]
    for name in ("heldout_images", "heldout_classes"):
        assert 0 < references[f"{name}_oracle_loss"] < references[f"{name}_identity_loss"]
    grid = (tmp_path / "stn_alignment_grid.png").read_bytes()
    assert grid.startswith(b"\x89PNG") and len(grid) > 10_000


def test_a_missing_weight_file_fails_before_any_work(load_example, tmp_path, capsys):
    example = load_example("fashion_mnist_classifiers")
    assert example.main(["--weights", str(tmp_path / "nope.h5"), "--out", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_an_unavailable_dataset_fails_with_advice(load_example, tmp_path, sign_descent_file, monkeypatch,
                                                  capsys):
    import keras

    def offline():
        raise OSError("no route to host")

    monkeypatch.setattr(keras.datasets.mnist, "load_data", offline)
    example = load_example("fashion_mnist_classifiers")
    code = example.main(["--dataset", "mnist", "--weights", str(sign_descent_file), "--out", str(tmp_path)])
    assert code == 2
    assert "internet" in capsys.readouterr().err
