"""The shipped paper-faithful optimizers against tuned baselines, on the protocol of issue 3.

Protocol: fmnist_mlp, Keras default initialization, batch 128, 100 steps, final loss = mean
training-minibatch loss of the last 10 steps, 5 seeds never used in meta-training; Adam,
RMSProp, SGD and SGD+Nesterov(0.9) tuned over 1e-3..1 in half-decade steps in the same run.
The same command as `python benchmarks/quality.py --weights paper-fmnist-mlp`.

What it asserts is what README reports: the learned optimizer beats tuned Adam, RMSProp and
SGD and is level with tuned Nesterov (measured ratio 0.996). The issue's target of 0.90 x the
best baseline is NOT met and README says so; this test guards the measured level.
"""

import pytest

from keras_learned_opt import list_pretrained
from keras_learned_opt.compare import compare


@pytest.mark.slow
def test_paper_fmnist_mlp_against_tuned_baselines():
    assert "paper-fmnist-mlp" in list_pretrained()
    result = compare("fmnist_mlp", ["learned:paper-fmnist-mlp", "adam", "rmsprop", "sgd", "nag"],
                     seeds=5, steps=100, verbose=0)
    learned, *baselines = result.optimizers
    assert learned.best is not None, "the learned optimizer diverged"
    by_label = {b.label: b.best.mean for b in baselines}
    for label in ("adam", "rmsprop", "sgd"):
        assert learned.best.mean < 0.95 * by_label[label], (label, learned.best.mean, by_label)
    assert result.ratio(learned) <= 1.02, result.table()


@pytest.mark.slow
def test_imitation_started_files_beat_every_tuned_baseline_clearly():
    """The paper's architecture trained by imitation (README, "Results"; `python
    benchmarks/quality.py --weights <name>`): `paper-fmnist-mlp-dbd` (imitation of Nesterov
    momentum on delta-bar-delta gains) measured 0.905x the best tuned baseline (0.911x on 50
    seeds), and
    `paper-fmnist-mlp-imitation` (imitation of scheduled Nesterov, then meta-trained) 0.927x.
    The 0.90 target is missed and README says so; this guards the measured levels, which
    are at or below the best hand-made rule found (0.914, benchmarks/first_order_headroom.py)."""
    from keras_learned_opt.bundled import resolve_weights
    from keras_learned_opt.weights import load_weight_file

    tuned = load_weight_file(resolve_weights("paper-fmnist-mlp-imitation")).provenance
    assert tuned["command"].startswith("python -m keras_learned_opt.meta_train")
    assert tuned["init_from_provenance"]["command"].startswith(
        "python -m keras_learned_opt.imitation")
    imitated = load_weight_file(resolve_weights("paper-fmnist-mlp-dbd")).provenance
    for provenance in (imitated, imitated["init_from_provenance"]):
        assert provenance["command"].startswith("python -m keras_learned_opt.imitation")
        assert provenance["teachers"][0]["kind"] == "DeltaBarDeltaTeacher"
    result = compare("fmnist_mlp", ["learned:paper-fmnist-mlp-dbd",
                                    "learned:paper-fmnist-mlp-imitation", "adam", "rmsprop",
                                    "sgd", "nag"], seeds=5, steps=100, verbose=0)
    dbd, imitation = result.optimizers[:2]
    assert result.best_baseline().label == "nag", result.table()
    assert result.ratio(dbd) <= 0.92, result.table()
    assert result.ratio(imitation) <= 0.95, result.table()


# The cases of benchmarks/generalization.py where the default meets its target, each with
# the baseline that the suite's tuning picked (README, "Generalization"): comparing against
# that rule at that rate on the same 5 evaluation seeds reproduces the suite's ratio.
DEFAULT_MET_CASES = [
    ("fmnist_mlp", 1000, "nag", 0.3),
    ("fmnist_mlp_relu", 100, "nag", 0.1),
    ("fmnist_cnn", 100, "adam", 0.03),
]


@pytest.mark.slow
@pytest.mark.parametrize("problem,steps,baseline,rate", DEFAULT_MET_CASES)
def test_default_meets_its_generalization_targets(problem, steps, baseline, rate):
    """`antisymmetric-imitation-mix` (the default) reaches at most 1.00x the best tuned
    baseline at 10x the 100-step horizon, on the ReLU MLP and on the small CNN (README:
    0.995, 0.986, 0.957); it misses 0.90 on the 100-step MLP, and README says so."""
    from keras_learned_opt.bundled import default_pretrained_name

    assert default_pretrained_name() == "antisymmetric-imitation-mix"
    result = compare(problem, [f"learned:{default_pretrained_name()}", baseline], seeds=5,
                     steps=steps, lr_grid=[rate], verbose=0)
    learned = result.optimizers[0]
    assert learned.best is not None and not any(r.diverged.any() for r in learned.runs)
    assert result.ratio(learned) <= 1.0, result.table()


def test_default_is_antisymmetric_and_has_no_drift():
    """Zero gradients give exactly zero updates, so the default cannot drift over long
    runs (the paper file drifts: README, "Generalization")."""
    import numpy as np

    from keras_learned_opt.bundled import resolve_weights
    from keras_learned_opt.network import apply_network, zero_state
    from keras_learned_opt.weights import load_weight_file

    default = load_weight_file(resolve_weights(None))
    assert default.config.antisymmetric
    state = zero_state(default.config, 8)
    for step in range(1, 4):
        update, state = apply_network(default.arrays, default.config, np.zeros(8, "float32"),
                                      state, step)
        assert np.all(np.asarray(update) == 0.0)


@pytest.mark.slow
@pytest.mark.parametrize("problem,baseline,rate", [("fmnist_mlp_relu", "nag", 0.1),
                                                   ("fmnist_cnn", "adam", 0.03),
                                                   ("fmnist_mlp", "nag", 0.3)])
def test_window_mix_beats_the_default_and_the_tuned_baseline(problem, baseline, rate):
    """`antisymmetric-window-mix` (README, "Generalization": ReLU 0.948, CNN 0.950, 100-step
    MLP 0.994, against the default's 0.986, 0.957, 1.021), on the suite's evaluation seeds
    against the baseline and rate the suite's tuning picked, and antisymmetric like the
    default."""
    from keras_learned_opt.bundled import resolve_weights
    from keras_learned_opt.weights import load_weight_file

    assert load_weight_file(resolve_weights("antisymmetric-window-mix")).config.antisymmetric
    result = compare(problem, ["learned:antisymmetric-window-mix",
                               "learned:antisymmetric-imitation-mix", baseline], seeds=5,
                     steps=100, lr_grid=[rate], verbose=0)
    window, default = result.optimizers[:2]
    assert not any(r.diverged.any() for r in window.runs)
    assert result.ratio(window) <= 1.0, result.table()
    assert window.best.mean < default.best.mean, result.table()
