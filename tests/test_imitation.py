import json

import keras
import numpy as np
import pytest

import keras_learned_opt as klo
from keras_learned_opt.imitation import (
    ImitationConfig,
    Imitator,
    NesterovTeacher,
    imitate,
    imitation_error,
    main,
    record_teacher,
)
from keras_learned_opt.network import NetworkConfig, initial_weights
from keras_learned_opt.problems import get_problem
from keras_learned_opt.weights import load_weight_file

SMALL = dict(problem="quadratic", teacher="nesterov:lr=0.003", network={"hidden_sizes": [8, 8]},
             steps=20, teacher_runs=8, columns=64, learning_rate=1e-2, validate_every=10,
             validation_seeds=2, checkpoint_every=5)


def test_teacher_spec_parses_and_bad_specs_are_named():
    teacher = NesterovTeacher.parse("nesterov:lr=0.5,momentum=0.8,final=0.3,final_share=0.25")
    assert teacher == NesterovTeacher(0.5, 0.8, 0.3, 0.25)
    np.testing.assert_allclose(teacher.rates(8), [0.5] * 6 + [0.15] * 2)
    for spec, words in [("adam:lr=0.1", "unknown teacher"), ("nesterov:momentum=0.9", "learning rate"),
                        ("nesterov:lr=0.1,beta=2", "bad teacher option"),
                        ("nesterov:lr=fast", "needs a number"), ("nesterov:lr=-1", "> 0")]:
        with pytest.raises(ValueError, match=words):
            NesterovTeacher.parse(spec)


def test_teacher_updates_are_those_of_keras_sgd_with_nesterov():
    problem = get_problem("quadratic")
    gradients, updates, losses = record_teacher(problem, NesterovTeacher(0.003, 0.9), 5, 12)
    assert gradients.shape == updates.shape == (12, 10) and losses.shape == (12,)
    variable = keras.Variable(np.zeros(10, np.float32))
    sgd = keras.optimizers.SGD(0.003, momentum=0.9, nesterov=True)
    for g, expected in zip(gradients, updates):
        before = variable.numpy().copy()
        sgd.apply([g], [variable])
        np.testing.assert_allclose(variable.numpy() - before, expected, rtol=1e-4, atol=1e-7)


def test_error_is_one_for_a_network_that_never_moves():
    config = NetworkConfig(hidden_sizes=(8, 8))
    weights = initial_weights(config)  # zero output layer: no update
    rng = np.random.default_rng(0)
    error = imitation_error(weights, config, rng.normal(size=(5, 7)).astype("float32"),
                            rng.normal(size=(5, 7)).astype("float32"))
    assert float(error) == pytest.approx(1.0)


def test_imitation_lowers_the_error_and_writes_a_loadable_file(tmp_path):
    out = imitate(tmp_path / "warm.h5", verbose=0, iterations=60, command="test", **SMALL)
    weight_file = load_weight_file(out)
    history = weight_file.provenance["validation_history"]
    assert history[-1]["error"] < 0.5 * 1.0, history  # started at 1.0 (zero output layer)
    assert weight_file.provenance["teacher"]["learning_rate"] == 0.003
    assert weight_file.provenance["command"] == "test"
    assert "imitation of nesterov:lr=0.003" in weight_file.description
    variable = keras.Variable(np.ones(10, np.float32))
    klo.LearnedOptimizer(weights=out).apply([np.ones(10, np.float32)], [variable])
    assert np.all(np.isfinite(variable.numpy()))


def test_resumed_run_matches_an_uninterrupted_one(tmp_path):
    whole = Imitator(ImitationConfig(iterations=10, **SMALL), tmp_path / "whole.h5", verbose=0)
    whole.run()
    part = Imitator(ImitationConfig(iterations=5, **SMALL), tmp_path / "part.h5", verbose=0)
    part.run()
    resumed = Imitator(ImitationConfig(iterations=10, **SMALL), tmp_path / "part.h5", verbose=0)
    assert resumed.load_checkpoint() and resumed.iteration == 5
    resumed.run()
    for name in whole.names:
        np.testing.assert_allclose(resumed.weights[name].numpy(), whole.weights[name].numpy(),
                                   rtol=1e-5, atol=1e-7)
    changed = dict(SMALL, columns=32)
    with pytest.raises(ValueError, match="different imitation configuration"):
        Imitator(ImitationConfig(iterations=10, **changed), tmp_path / "part.h5",
                 verbose=0).load_checkpoint()


def test_diverging_teacher_and_wrong_architecture_are_refused(tmp_path):
    with pytest.raises(ValueError, match="diverged"):
        imitate(tmp_path / "x.h5", **dict(SMALL, teacher="nesterov:lr=0.5"), verbose=0)
    imitate(tmp_path / "small.h5", **SMALL, iterations=1, verbose=0)
    with pytest.raises(klo.ArchitectureMismatchError, match="init-from"):
        imitate(tmp_path / "y.h5", **dict(SMALL, network={"hidden_sizes": [4]}),
                init_from=str(tmp_path / "small.h5"), verbose=0)


def test_command_line_and_meta_training_from_its_file(tmp_path):
    out = tmp_path / "warm.h5"
    main(["--problem", "quadratic", "--teacher", "nesterov:lr=0.003", "--hidden", "8", "8",
          "--steps", "20", "--teacher-runs", "8", "--columns", "64", "--iterations", "3",
          "--validate-every", "3", "--validation-seeds", "2", "--quiet", "--out", str(out)])
    provenance = load_weight_file(out).provenance
    assert provenance["command"].startswith("python -m keras_learned_opt.imitation --problem")
    from keras_learned_opt.meta_train import meta_train

    tuned = meta_train(tmp_path / "tuned.h5", problems=["quadratic"], network={"hidden_sizes": [8, 8]},
                       episodes=2, steps=20, unroll=20, validate_every=2, validation_seeds=2,
                       init_from=str(out), verbose=0)
    chain = load_weight_file(tuned).provenance["init_from_provenance"]
    assert chain["command"] == provenance["command"]
    assert json.dumps(chain["imitation_config"]) == json.dumps(provenance["imitation_config"])
