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
def test_imitation_started_file_beats_every_tuned_baseline_clearly():
    """`paper-fmnist-mlp-imitation` (the paper's architecture, started from an imitation
    of scheduled Nesterov momentum, then meta-trained) measured 0.927x the best tuned
    baseline (README; `python benchmarks/quality.py --weights paper-fmnist-mlp-imitation`).
    The 0.90 target is missed and README says so; this guards the measured level, which is
    below the best hand-made rule found (0.952, benchmarks/first_order_headroom.py)."""
    from keras_learned_opt.weights import load_weight_file
    from keras_learned_opt.bundled import resolve_weights

    provenance = load_weight_file(resolve_weights("paper-fmnist-mlp-imitation")).provenance
    assert provenance["command"].startswith("python -m keras_learned_opt.meta_train")
    assert provenance["init_from_provenance"]["command"].startswith(
        "python -m keras_learned_opt.imitation")
    result = compare("fmnist_mlp", ["learned:paper-fmnist-mlp-imitation", "adam", "rmsprop",
                                    "sgd", "nag"], seeds=5, steps=100, verbose=0)
    assert result.ratio(result.optimizers[0]) <= 0.95, result.table()


@pytest.mark.slow
def test_default_holds_up_over_ten_times_the_horizon():
    """The antisymmetric default was chosen for runs longer than the paper's
    100 steps: at 1000 steps on fmnist_mlp it must beat paper-fmnist-mlp clearly
    (README: 0.399 against 0.533 on 5 seeds, tuned Nesterov 0.366), and its update
    has no drift: zero gradients give exactly zero updates."""
    import numpy as np

    from keras_learned_opt.bundled import default_pretrained_name, resolve_weights
    from keras_learned_opt.meta_train import EVALUATION_SEED_BASE
    from keras_learned_opt.network import apply_network, zero_state
    from keras_learned_opt.problems import get_problem
    from keras_learned_opt.unroll import evaluate, final_loss
    from keras_learned_opt.weights import load_weight_file

    assert default_pretrained_name() == "antisymmetric-mix-u100"
    default = load_weight_file(resolve_weights(None))
    paper = load_weight_file(resolve_weights("paper-fmnist-mlp"))
    assert default.config.antisymmetric
    seeds = [EVALUATION_SEED_BASE + i for i in range(3)]
    finals = {}
    for name, weights in (("default", default), ("paper", paper)):
        losses = evaluate(weights.arrays, weights.config, get_problem("fmnist_mlp"), seeds, 1000)
        assert np.all(np.isfinite(losses)), name
        finals[name] = float(np.mean(final_loss(losses)))
    assert finals["default"] < 0.9 * finals["paper"], finals
    state = zero_state(default.config, 8)
    for step in range(1, 4):
        update, state = apply_network(default.arrays, default.config, np.zeros(8, "float32"), state, step)
        assert np.all(np.asarray(update) == 0.0)
