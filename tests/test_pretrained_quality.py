"""The shipped paper-faithful optimizer against tuned baselines, on the protocol of issue 3.

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
