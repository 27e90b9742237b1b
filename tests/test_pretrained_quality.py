"""The shipped paper-faithful optimizers against tuned baselines, on the protocol of issue 3.

Protocol: fmnist_mlp, Keras default initialization, batch 128, 100 steps, final loss = mean
training-minibatch loss of the last 10 steps, 5 seeds never used in meta-training; Adam,
RMSProp, SGD and SGD+Nesterov(0.9) tuned over 1e-3..1 in half-decade steps in the same run.
The same command as `python benchmarks/quality.py --weights paper-fmnist-mlp`.

What it asserts is what README reports: the learned optimizer beats tuned Adam, RMSProp and
SGD and is level with tuned Nesterov (measured ratio 0.996). The issue's target of 0.90 x the
best baseline is NOT met and README says so; this test guards the measured level.
"""

from pathlib import Path

import pytest

from keras_learned_opt import list_pretrained
from keras_learned_opt.compare import compare


def _provenance_chain(name: str) -> list[dict]:
    """A bundled file's provenance, then that of each file it was started from."""
    from keras_learned_opt.bundled import resolve_weights
    from keras_learned_opt.weights import load_weight_file

    chain = [load_weight_file(resolve_weights(name)).provenance]
    while "init_from_provenance" in chain[-1]:
        chain.append(chain[-1]["init_from_provenance"])
    return chain


def test_imitation_started_files_record_their_recipes():
    """`paper-fmnist-mlp-imitation`: an imitation, then meta-trained;
    `paper-fmnist-mlp-dbd`: two imitations of a delta-bar-delta teacher;
    `paper-fmnist-mlp-dbd-rms2`: five imitation commands, the last two on the
    RMS-normalized teacher."""
    tuned = _provenance_chain("paper-fmnist-mlp-imitation")
    assert tuned[0]["command"].startswith("python -m keras_learned_opt.meta_train")
    assert tuned[1]["command"].startswith("python -m keras_learned_opt.imitation")
    imitated = _provenance_chain("paper-fmnist-mlp-dbd")
    assert len(imitated) == 2
    for provenance in imitated:
        assert provenance["command"].startswith("python -m keras_learned_opt.imitation")
        assert provenance["teachers"][0]["kind"] == "DeltaBarDeltaTeacher"
    chain = _provenance_chain("paper-fmnist-mlp-dbd-rms2")
    assert len(chain) == 5, [p["command"] for p in chain]
    assert all(p["command"].startswith("python -m keras_learned_opt.imitation") for p in chain)
    assert [p["teachers"][0]["power"] for p in chain[:3]] == [0.3, 0.3, 0.3]
    assert [p["teachers"][0]["beta_2"] for p in chain[:3]] == [0.9, 0.99, 0.99]


@pytest.mark.slow
def test_paper_architecture_files_against_the_tuned_grid():
    """The five files of the paper's architecture in one run (so the four baselines are
    tuned over the full grid once), each as measured by `python benchmarks/quality.py
    --weights <name>` (README, "Results"):

    - `paper-fmnist-mlp` (meta-trained as in the paper) beats tuned Adam, RMSProp and SGD
      and is level with tuned Nesterov (0.996x); it misses the 0.90 target, and README says so;
    - `paper-fmnist-mlp-dbd` (imitation of Nesterov momentum on delta-bar-delta gains)
      0.905x, `paper-fmnist-mlp-dbd-rms` (0.8, its fine-tune on an RMS-normalized teacher)
      0.907x, `paper-fmnist-mlp-imitation` (imitation of scheduled Nesterov, then
      meta-trained) 0.927x: they miss 0.90 too, and this guards their levels;
    - `paper-fmnist-mlp-dbd-rms2` (0.8) meets issue 3's target: 0.897x.
    """
    assert "paper-fmnist-mlp" in list_pretrained()
    names = ["paper-fmnist-mlp", "paper-fmnist-mlp-dbd", "paper-fmnist-mlp-imitation",
             "paper-fmnist-mlp-dbd-rms", "paper-fmnist-mlp-dbd-rms2"]
    result = compare("fmnist_mlp", [f"learned:{name}" for name in names]
                     + ["adam", "rmsprop", "sgd", "nag"], seeds=5, steps=100, verbose=0)
    paper, dbd, imitation, dbd_rms, dbd_rms2, *baselines = result.optimizers
    assert all(learned.best is not None for learned in result.optimizers[:5]), result.table()
    assert result.best_baseline().label == "nag", result.table()
    by_label = {b.label: b.best.mean for b in baselines}
    for label in ("adam", "rmsprop", "sgd"):
        assert paper.best.mean < 0.95 * by_label[label], result.table()
    assert result.ratio(paper) <= 1.02, result.table()
    assert result.ratio(dbd) <= 0.92, result.table()
    assert result.ratio(imitation) <= 0.95, result.table()
    assert result.ratio(dbd_rms) <= 0.92, result.table()  # measured 0.907 (0.898 on 50)
    assert result.ratio(dbd_rms2) <= 0.90, result.table()


@pytest.mark.slow
def test_dbd_rms2_file_meets_the_target_on_fifty_seeds():
    """Issue 3's target on 50 evaluation seeds, where the tuning picked Nesterov at 0.3:
    `paper-fmnist-mlp-dbd-rms2` measured 0.890 (`python benchmarks/quality.py --weights
    paper-fmnist-mlp-dbd-rms2 --seeds 50`)."""
    fifty = compare("fmnist_mlp", ["learned:paper-fmnist-mlp-dbd-rms2", "nag"], seeds=50,
                    steps=100, lr_grid=[0.3], verbose=0)
    assert fifty.ratio(fifty.optimizers[0]) <= 0.90, fifty.table()


# The 100-step cases of benchmarks/generalization.py where the default meets its target,
# each with the baseline that the suite's tuning picked (README, "Generalization"):
# comparing against that rule at that rate on the same 5 evaluation seeds reproduces the
# suite's ratio.
DEFAULT_MET_CASES = [
    ("fmnist_mlp_relu", "nag", 0.1),
    ("fmnist_cnn", "adam", 0.03),
]


def _default_name() -> str:
    from keras_learned_opt.bundled import default_pretrained_name

    assert default_pretrained_name() == "antisymmetric-horizon-mix5"
    return default_pretrained_name()


@pytest.mark.slow
@pytest.mark.parametrize("problem,baseline,rate", DEFAULT_MET_CASES)
def test_default_meets_its_generalization_targets(problem, baseline, rate):
    """`antisymmetric-horizon-mix5` (the default since 0.13), told the run's length as
    `compare` does, reaches at most 1.00x the best tuned baseline on the ReLU MLP and on
    the small CNN (README: 0.974, 0.906); it misses 0.90 on the 100-step MLP (0.906), and
    README says so."""
    result = compare(problem, [f"learned:{_default_name()}", baseline], seeds=5, steps=100,
                     lr_grid=[rate], verbose=0)
    learned = result.optimizers[0]
    assert learned.best is not None and not any(r.diverged.any() for r in learned.runs)
    assert result.ratio(learned) <= 1.0, result.table()


LONG_HORIZON_FINALS = (Path(__file__).parent.parent / "benchmarks" / "results"
                       / "generalization-1000-steps-20-seeds-antisymmetric-horizon-mix5"
                       / "fmnist_mlp_1000_finals.json")


@pytest.mark.slow
def test_default_meets_the_long_horizon_target_on_the_first_three_of_its_twenty_seeds():
    """Five seeds cannot tell the 1000-step ratio from 1.00 reliably (standard error about
    2.5%), so the default was judged on 20 evaluation seeds, by the rule fixed before
    measuring (pretrained/README.md): 0.920 against tuned Nesterov (lr 0.3), lower on each
    of the 20 seeds (`python benchmarks/generalization.py --weights antisymmetric-horizon-mix5
    --seeds 20 --cases fmnist_mlp_1000`, per-seed finals committed; per-seed ratios
    0.87-0.99). This reruns the first three (0.917 there: 0.947, 0.893, 0.909, each seed
    below Nesterov), told total_steps=1000 as `compare` does, and checks that each seed
    reproduces the committed run, so the 20-seed figure is the one this code computes.
    (Ten seeds took 170-200 s of the suite's time, five about 100 s; three keep the suite
    well under 15 minutes.)"""
    import json

    import numpy as np

    committed = json.loads(LONG_HORIZON_FINALS.read_text())
    default = f"learned:{_default_name()}"
    result = compare("fmnist_mlp", [default, "nag"], seeds=committed["seeds"][:3],
                     steps=1000, lr_grid=[0.3], verbose=0)
    assert result.metadata["total_steps_told"] == {default: 1000}
    learned, nesterov = result.optimizers
    assert not any(r.diverged.any() for r in learned.runs)
    assert result.ratio(learned) <= 1.0, result.table()
    assert np.all(learned.best.final < nesterov.best.final), result.table()
    recorded = {o["label"]: o["runs"] for o in committed["optimizers"]}
    for label, mine in ((default, learned), ("nag", nesterov)):
        run = next(r for r in recorded[label]
                   if np.isclose(r["learning_rate"], mine.best.learning_rate))
        np.testing.assert_allclose(mine.best.final, run["final"][:3], rtol=0.02)


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
def test_the_default_is_faster_at_100_steps_than_the_last_two_and_reads_the_horizon():
    """On the suite's 5 evaluation seeds against tuned Nesterov (lr 0.3; README,
    "Generalization"), told total_steps=100 as `compare` does: `antisymmetric-horizon-mix5`
    (the default since 0.13) 0.906x, the 0.12 default `antisymmetric-horizon-mix4` 0.909x,
    the 0.11 default `antisymmetric-horizon-mix3` 0.927x. Not told, the default still
    trains (0.923x). All are antisymmetric (no drift) and read the horizon. (Until 0.12
    this test also reran the 0.9 and 0.10 files, about 60 s of the suite; their figures
    stay reproducible with `python benchmarks/generalization.py --weights NAME`, and
    test_pretrained.py pins the files' checksums.)"""
    from keras_learned_opt.bundled import resolve_weights
    from keras_learned_opt.weights import load_weight_file

    names = ["antisymmetric-horizon-mix3", "antisymmetric-horizon-mix4", _default_name()]
    for name in names:
        config = load_weight_file(resolve_weights(name)).config
        assert config.antisymmetric and config.horizon_input
    specs = [f"learned:{name}" for name in names]
    result = compare("fmnist_mlp", specs + ["nag"], seeds=5, steps=100, lr_grid=[0.3],
                     verbose=0)
    assert result.metadata["total_steps_told"] == {spec: 100 for spec in specs}
    older, previous, told, nesterov = result.optimizers
    assert result.ratio(older) <= 0.935, result.table()
    assert result.ratio(told) <= 0.91, result.table()
    # The same seeds and batches for all three: the order is deterministic, and the
    # default's lead over the 0.12 file (0.003) is some 30 times the cross-machine
    # rounding of a final loss.
    assert result.ratio(told) < result.ratio(previous) < result.ratio(older) - 0.01, \
        result.table()
    # Not told: the same seeds and batches, so the same Nesterov runs are the reference.
    default = specs[-1]
    untold = compare("fmnist_mlp", [default], seeds=5, steps=100, verbose=0,
                     tell_horizon=False)
    assert untold.metadata["total_steps_told"] == {default: None}
    learned = untold.optimizers[0]
    assert not any(r.diverged.any() for r in learned.runs)
    assert learned.best.mean / nesterov.best.mean <= 0.95, untold.table()
    assert learned.best.mean != told.best.mean  # telling it changed the run
