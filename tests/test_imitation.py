import dataclasses
import json

import keras
import numpy as np
import pytest

import keras_learned_opt as klo
from keras_learned_opt.imitation import (
    COORDINATE_FLOOR,
    AdamTeacher,
    DeltaBarDeltaTeacher,
    ImitationConfig,
    Imitator,
    LearnedTeacher,
    NesterovTeacher,
    imitate,
    imitation_error,
    main,
    parse_teacher,
    record_student,
    record_teacher,
    teacher_seed,
)
from keras_learned_opt.network import NetworkConfig, apply_network, initial_weights, zero_state
from keras_learned_opt.problems import get_problem
from keras_learned_opt.weights import load_weight_file

SMALL = dict(problem="quadratic", teacher="nesterov:lr=0.003", network={"hidden_sizes": [8, 8]},
             steps=20, teacher_runs=8, columns=64, learning_rate=1e-2, validate_every=10,
             validation_seeds=2, checkpoint_every=5)


def small_config(**changes) -> ImitationConfig:
    options = dict(SMALL, **changes)
    return ImitationConfig(problems=[options.pop("problem")], teachers=[options.pop("teacher")],
                           **options)


def test_teacher_spec_parses_and_bad_specs_are_named():
    teacher = NesterovTeacher.parse("nesterov:lr=0.5,momentum=0.8,final=0.3,final_share=0.25")
    assert teacher == NesterovTeacher(0.5, 0.8, 0.3, 0.25)
    np.testing.assert_allclose(teacher.rates(8), [0.5] * 6 + [0.15] * 2)
    assert parse_teacher("adam:lr=0.03,beta_2=0.99") == AdamTeacher(0.03, beta_2=0.99)
    for spec, words in [("lion:lr=0.1", "unknown teacher"), ("nesterov:momentum=0.9", "learning rate"),
                        ("nesterov:lr=0.1,beta=2", "bad teacher option"),
                        ("adam:lr=0.1,momentum=0.9", "bad teacher option"),
                        ("nesterov:lr=fast", "needs a number"), ("nesterov:lr=-1", "> 0"),
                        ("adam:lr=0.1,beta_1=1", "betas"), ("dbd:lr=0.1,gain_max=0.5", "gains"),
                        ("dbd:lr=0.1,down=1", "down")]:
        with pytest.raises(ValueError, match=words):
            parse_teacher(spec)
    assert parse_teacher("dbd:lr=0.5,up=0.2,final=0.3") == DeltaBarDeltaTeacher(
        0.5, up=0.2, final_factor=0.3)
    with pytest.raises(ValueError, match="one per problem"):
        ImitationConfig(problems=["quadratic", "fmnist_mlp", "fmnist_cnn"],
                        teachers=["nesterov:lr=0.1", "adam:lr=0.1"])


def test_linear_decay_falls_from_the_rate_to_the_final_rate_over_the_final_share():
    teacher = parse_teacher("dbd:lr=0.04,final=0.1,final_share=0.5,decay=linear")
    assert teacher.decay == "linear"
    # steps 0-5 at the full rate (step 5 starts the last half), then down the line that
    # reaches 0.04 * 0.1 where the run ends (step 10): 0.04 * (1 - 0.9 * k / 5), k = 1..4
    expected = [0.04] * 6 + [0.04 * (1 - 0.9 * k / 5) for k in range(1, 5)]
    np.testing.assert_allclose(teacher.rates(10), expected, rtol=1e-12)
    nesterov = parse_teacher("nesterov:lr=0.5,final=0.3,final_share=0.25,decay=linear")
    np.testing.assert_allclose(nesterov.rates(8), [0.5] * 7 + [0.5 * (1 - 0.7 / 2)])
    # the default stays the step cut, unchanged by the option's existence
    np.testing.assert_allclose(parse_teacher("nesterov:lr=0.5,final=0.3").rates(10),
                               [0.5] * 8 + [0.15] * 2)
    adam = AdamTeacher(0.01, final_factor=0.5, final_share=0.5, decay="linear")
    _, cut_updates, _ = record_teacher(get_problem("quadratic"), AdamTeacher(
        0.01, final_factor=0.5, final_share=0.5), 5, 8)
    _, linear_updates, _ = record_teacher(get_problem("quadratic"), adam, 5, 8)
    # equal before the cut (steps 0-3), different after it
    np.testing.assert_allclose(linear_updates[:4], cut_updates[:4], rtol=1e-6)
    assert not np.allclose(linear_updates[4:], cut_updates[4:])
    for spec in ("dbd:lr=0.1,decay=cosine", "nesterov:lr=0.1,decay=1"):
        with pytest.raises(ValueError, match="decay must be one of"):
            parse_teacher(spec)


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


def test_adam_teacher_updates_are_those_of_keras_adam():
    problem = get_problem("quadratic")
    gradients, updates, _ = record_teacher(problem, AdamTeacher(0.01, beta_2=0.99), 5, 12)
    variable = keras.Variable(np.zeros(10, np.float32))
    adam = keras.optimizers.Adam(0.01, beta_2=0.99)
    for g, expected in zip(gradients, updates):
        before = variable.numpy().copy()
        adam.apply([g], [variable])
        np.testing.assert_allclose(variable.numpy() - before, expected, rtol=1e-4, atol=1e-8)


def test_delta_bar_delta_teacher_follows_its_rule_coordinate_by_coordinate():
    """A scalar loop of Jacobs' rule with Nesterov momentum, against the teacher's vector code."""
    teacher = DeltaBarDeltaTeacher(0.01, up=0.2, down=0.3, trace=0.5, gain_min=0.5, gain_max=2.0,
                                   momentum=0.8, final_factor=0.5, final_share=0.25)
    gradients, updates, _ = record_teacher(get_problem("quadratic"), teacher, 5, 16)
    rates = teacher.rates(16)
    assert rates[0] == 0.01 and rates[-1] == 0.005
    for i in range(gradients.shape[1]):
        gain, trace, velocity = 1.0, 0.0, 0.0
        for t, g in enumerate(gradients[:, i].astype(np.float64)):
            if g * trace > 0:
                gain = min(gain * 1.2, 2.0)
            elif g * trace < 0:
                gain = max(gain * 0.7, 0.5)
            trace = 0.5 * trace + 0.5 * g
            velocity = 0.8 * velocity - rates[t] * gain * g
            assert updates[t, i] == pytest.approx(0.8 * velocity - rates[t] * gain * g,
                                                  rel=1e-4, abs=1e-9)


def test_delta_bar_delta_teacher_with_power_divides_by_a_power_of_the_rms():
    """The partial normalization, as a scalar loop: g / rms**p, rms from squares started at g0**2."""
    teacher = DeltaBarDeltaTeacher(0.01, power=0.3, beta_2=0.9, momentum=0.8)
    gradients, updates, _ = record_teacher(get_problem("quadratic"), teacher, 5, 12)
    plain = record_teacher(get_problem("quadratic"), DeltaBarDeltaTeacher(0.01, momentum=0.8), 5, 12)
    assert not np.allclose(updates[1:], plain[1][1:], rtol=1e-3)
    for i in range(gradients.shape[1]):
        gain, trace, velocity, square = 1.0, 0.0, 0.0, 0.0
        for t, g in enumerate(gradients[:, i].astype(np.float64)):
            if g * trace > 0:
                gain = min(gain * 1.1, 10.0)
            elif g * trace < 0:
                gain = max(gain * 0.9, 0.1)
            trace = 0.7 * trace + 0.3 * g
            square = g * g if square == 0 else 0.9 * square + 0.1 * g * g
            scaled = g / (np.sqrt(square) + 1e-8) ** 0.3
            velocity = 0.8 * velocity - 0.01 * gain * scaled
            assert updates[t, i] == pytest.approx(0.8 * velocity - 0.01 * gain * scaled,
                                                  rel=1e-4, abs=1e-9)


def test_delta_bar_delta_teacher_rejects_a_bad_power():
    with pytest.raises(ValueError, match="power"):
        parse_teacher("dbd:lr=0.5,power=2")


def test_student_runs_follow_the_network_and_are_labelled_by_the_teacher(tmp_path):
    """DAgger: the network moves the parameters (its losses are those of the meta-trainer's
    own evaluation of it), and each label is what the teacher would do after the gradients
    the network met."""
    from keras_learned_opt.unroll import evaluate

    start = imitate(tmp_path / "start.h5", verbose=0, iterations=20, **SMALL)
    weight_file = load_weight_file(start)
    problem, teacher = get_problem("quadratic"), NesterovTeacher(0.003, 0.9)
    gradients, targets, losses = record_student(problem, teacher, weight_file.arrays,
                                                weight_file.config, 7, 20)
    np.testing.assert_allclose(losses, evaluate(weight_file.arrays, weight_file.config, problem,
                                                [7], 20)[0], rtol=1e-5)
    _, _, teacher_losses = record_teacher(problem, teacher, 7, 20)
    assert not np.allclose(losses, teacher_losses)  # its own trajectory, not the teacher's
    velocity = np.zeros(gradients.shape[1])
    for g, target in zip(gradients.astype(np.float64), targets):
        velocity = 0.9 * velocity - 0.003 * g
        np.testing.assert_allclose(target, 0.9 * velocity - 0.003 * g, rtol=1e-4, atol=1e-9)

    imitator = Imitator(small_config(init_from=str(start), student_runs=3, iterations=5),
                        tmp_path / "d.h5", verbose=0)
    recorded, labels, _ = imitator.record()
    assert recorded[0].shape == labels[0].shape == (20, (8 + 3) * 10)
    np.testing.assert_allclose(recorded[0][:, 80:90], record_student(
        problem, teacher, weight_file.arrays, weight_file.config,
        teacher_seed(0, 8), 20)[0], rtol=1e-6)
    imitator.run()
    assert load_weight_file(tmp_path / "d.h5").provenance["imitation_config"]["student_runs"] == 3
    with pytest.raises(ValueError, match="init_from"):
        small_config(student_runs=2)
    assert small_config(student_runs=0).fingerprint() == small_config().fingerprint()


def test_error_is_one_for_a_network_that_never_moves():
    config = NetworkConfig(hidden_sizes=(8, 8))
    weights = initial_weights(config)  # zero output layer: no update
    rng = np.random.default_rng(0)
    error = imitation_error(weights, config, rng.normal(size=(5, 7)).astype("float32"),
                            rng.normal(size=(5, 7)).astype("float32"))
    assert float(error) == pytest.approx(1.0)


def test_coordinate_weighting_counts_each_coordinate_against_its_own_targets():
    config = NetworkConfig(hidden_sizes=(8, 8))
    weights = initial_weights(config, seed=3)
    weights["output/kernel"] = np.full((8, 1), 0.5, np.float32)  # a network that moves
    rng = np.random.default_rng(1)
    gradients = rng.normal(size=(4, 6)).astype("float32")
    # coordinates 0-2 have targets 1000x those of 3-4; coordinate 5 has none
    targets = rng.normal(size=(4, 6)).astype("float32") * [1.0, 1.0, 1.0, 1e-3, 1e-3, 0.0]
    targets = targets.astype("float32")
    updates, state = [], zero_state(config, 6)
    for t in range(4):
        update, state = apply_network(weights, config, gradients[t], state, t + 1)
        updates.append(np.asarray(update))
    squared = (np.stack(updates) - targets) ** 2
    scale = (targets ** 2).sum(axis=0)
    pooled = squared.sum() / scale.sum()
    floor = COORDINATE_FLOOR * scale.mean()
    by_coordinate = np.mean(squared.sum(axis=0) / np.maximum(scale, floor))
    assert float(imitation_error(weights, config, gradients, targets)) == pytest.approx(
        pooled, rel=1e-5)
    assert float(imitation_error(weights, config, gradients, targets,
                                 weighting="coordinate")) == pytest.approx(by_coordinate, rel=1e-5)
    weights["output/kernel"][:] = 0.0  # never moves: 1 for coordinates above the floor
    still = imitation_error(weights, config, gradients[:, :3], targets[:, :3],
                            weighting="coordinate")
    assert float(still) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="weighting must be one of"):
        imitation_error(weights, config, gradients, targets, weighting="per-step")
    with pytest.raises(ValueError, match="error_weighting must be one of"):
        small_config(error_weighting="per-step")
    assert small_config(error_weighting="pooled").fingerprint() == small_config().fingerprint()
    assert small_config(error_weighting="coordinate").fingerprint() != small_config().fingerprint()


def test_imitation_lowers_the_error_and_writes_a_loadable_file(tmp_path):
    out = imitate(tmp_path / "warm.h5", verbose=0, iterations=60, command="test", **SMALL)
    weight_file = load_weight_file(out)
    history = weight_file.provenance["validation_history"]
    assert history[-1]["error"] < 0.5 * 1.0, history  # started at 1.0 (zero output layer)
    assert weight_file.provenance["teachers"][0]["learning_rate"] == 0.003
    assert weight_file.provenance["command"] == "test"
    assert "imitation of nesterov:lr=0.003" in weight_file.description
    variable = keras.Variable(np.ones(10, np.float32))
    klo.LearnedOptimizer(weights=out).apply([np.ones(10, np.float32)], [variable])
    assert np.all(np.isfinite(variable.numpy()))


def test_resumed_run_matches_an_uninterrupted_one(tmp_path):
    whole = Imitator(small_config(iterations=10), tmp_path / "whole.h5", verbose=0)
    whole.run()
    part = Imitator(small_config(iterations=5), tmp_path / "part.h5", verbose=0)
    part.run()
    resumed = Imitator(small_config(iterations=10), tmp_path / "part.h5", verbose=0)
    assert resumed.load_checkpoint() and resumed.iteration == 5
    resumed.run()
    for name in whole.names:
        np.testing.assert_allclose(resumed.weights[name].numpy(), whole.weights[name].numpy(),
                                   rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="different imitation configuration"):
        Imitator(small_config(iterations=10, columns=32), tmp_path / "part.h5",
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


def test_each_problem_is_imitated_with_its_own_teacher(tmp_path):
    """Two problems whose gradients differ in scale, each with its own teacher: the network
    learns both, and the file records which teacher ran on which problem."""
    options = {k: v for k, v in SMALL.items() if k not in ("problem", "teacher")}
    out = imitate(tmp_path / "pair.h5", problem=["quadratic", "quadratic@scaled1"],
                  teacher=["nesterov:lr=0.003", "adam:lr=0.01"], verbose=0, iterations=60,
                  **options)
    provenance = load_weight_file(out).provenance
    assert provenance["problems"] == ["quadratic", "quadratic@scaled1"]
    assert [t["kind"] for t in provenance["teachers"]] == ["NesterovTeacher", "AdamTeacher"]
    assert set(provenance["teacher_final_losses"]) == {"quadratic", "quadratic@scaled1"}
    assert "adam:lr=0.01 on quadratic@scaled1" in load_weight_file(out).description
    imitator = Imitator(ImitationConfig(problems=["quadratic", "quadratic@scaled1"],
                                        teachers=["nesterov:lr=0.003", "adam:lr=0.01"],
                                        iterations=60, **options), out, verbose=0)
    gradients, targets, _ = imitator.record()
    assert imitator.load_checkpoint()
    weights = {n: v.numpy() for n, v in imitator.weights.items()}
    errors = [float(imitation_error(weights, imitator.network_config, g, u))
              for g, u in zip(gradients, targets)]
    # Both fell from 1.0 (zero output layer); Adam's sign-like steps on the scaled
    # quadratic are the easy part, and are only learned if they were its targets.
    assert errors[0] < 0.95 and errors[1] < 0.2, errors


def _random_weights(config: NetworkConfig, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {name: (rng.normal(size=value.shape) * 0.3).astype("float32")
            for name, value in initial_weights(config).items()}


@pytest.mark.parametrize("features", ["log_and_sign", "rnnprop"])
def test_a_window_is_imitated_from_the_state_the_run_reaches_there(features):
    """The window's error equals the error over those steps of a run from step 0 (the
    RNNprop features also check that the window's step numbers continue the run's)."""
    from keras_learned_opt.imitation import network_state_after
    from keras_learned_opt.network import apply_network, zero_state

    config = NetworkConfig(hidden_sizes=(8, 8), input_features=features)
    weights = _random_weights(config)
    rng = np.random.default_rng(1)
    gradients = (rng.normal(size=(30, 7)) * 1e-2).astype("float32")
    targets = (rng.normal(size=(30, 7)) * 1e-2).astype("float32")
    state, updates = zero_state(config, 7), []
    for t in range(30):
        update, state = apply_network(weights, config, gradients[t], state, t + 1)
        updates.append(np.asarray(update))
    updates = np.stack(updates)
    expected = np.sum((updates[20:] - targets[20:]) ** 2) / np.sum(targets[20:] ** 2)
    start = network_state_after(weights, config, gradients[:20])
    window = imitation_error(weights, config, gradients[20:], targets[20:], start, 20)
    assert float(window) == pytest.approx(float(expected), rel=1e-5)
    for value in network_state_after(weights, config, gradients[:0]):
        assert not np.any(np.asarray(value))  # no steps: the zero state


def test_windowed_imitation_trains_resumes_and_says_so(tmp_path):
    with pytest.raises(ValueError, match="window must be 0"):
        small_config(window=7)  # does not divide the 20 steps
    assert small_config().fingerprint() == small_config(window=0).fingerprint()
    assert small_config(window=5).fingerprint() != small_config().fingerprint()
    whole = Imitator(small_config(window=5, iterations=10), tmp_path / "whole.h5", verbose=0)
    whole.run()
    part = Imitator(small_config(window=5, iterations=6), tmp_path / "part.h5", verbose=0)
    part.run()
    resumed = Imitator(small_config(window=5, iterations=10), tmp_path / "part.h5", verbose=0)
    resumed.run()
    for name in whole.names:
        np.testing.assert_allclose(resumed.weights[name].numpy(), whole.weights[name].numpy(),
                                   rtol=1e-5, atol=1e-7)
    weight_file = load_weight_file(tmp_path / "whole.h5")
    assert weight_file.provenance["imitation_config"]["window"] == 5
    assert "5-step windows" in weight_file.description
    out = imitate(tmp_path / "warm.h5", verbose=0, iterations=60, **dict(SMALL, window=5))
    history = load_weight_file(out).provenance["validation_history"]
    assert history[-1]["error"] < 0.5, history  # 1.0 at the start (zero output layer)


def test_problem_entries_may_name_their_run_length():
    from keras_learned_opt.imitation import problem_and_steps

    assert problem_and_steps("fmnist_mlp@1000", 100) == ("fmnist_mlp", 1000)
    assert problem_and_steps("fmnist_mlp", 100) == ("fmnist_mlp", 100)
    assert problem_and_steps("quadratic@scaled1", 20) == ("quadratic@scaled1", 20)
    assert problem_and_steps("quadratic@scaled1@40", 20) == ("quadratic@scaled1", 40)
    with pytest.raises(ValueError, match="must be positive"):
        problem_and_steps("quadratic@0", 20)
    with pytest.raises(ValueError, match="window must be 0"):
        small_config(problem="quadratic@30", window=20)  # 20 does not divide 30


def test_runs_of_two_lengths_train_a_horizon_input_told_each_length(tmp_path):
    """Runs of 20 and 40 steps in one imitation: a horizon_input network started from
    a file without that input; every window's error is computed from the state the
    network reaches there, told its own run's length."""
    from keras_learned_opt.imitation import network_state_after

    start = tmp_path / "start.h5"
    imitate(start, verbose=0, iterations=10, **SMALL)
    options = {k: v for k, v in SMALL.items() if k not in ("problem", "teacher", "network")}
    teacher = "nesterov:lr=0.003,final=0.1,final_share=0.5"
    config = ImitationConfig(problems=["quadratic@20", "quadratic@40"], teachers=[teacher],
                             iterations=10, window=10, init_from=str(start),
                             network={"hidden_sizes": [8, 8], "horizon_input": True}, **options)
    imitator = Imitator(config, tmp_path / "horizon.h5", verbose=0)
    assert imitator.steps == [20, 40] and imitator.horizons == [20.0, 40.0]
    assert not imitator.weights["lstm_0/kernel"].numpy()[2].any()  # the new input starts at zero
    gradients, targets, _ = imitator.record()
    assert [g.shape[0] for g in gradients] == [20, 40]
    # Give the new input weight, then check one batch against the error computed by hand.
    rng = np.random.default_rng(3)
    kernel = imitator.weights["lstm_0/kernel"]
    kernel.assign(kernel.numpy() + np.eye(1, kernel.shape[0], 2).T * rng.normal(size=kernel.shape[1]))
    weights = {n: v.numpy() for n, v in imitator.weights.items()}
    picks = [np.arange(5), np.arange(5)]
    batch = imitator._batch(gradients, targets, picks, np.random.default_rng(7))
    error, _ = imitator._step(*batch)
    starts = [int(s) for s in batch[3]]
    assert starts[1] in (0, 10, 20, 30) and starts[0] == starts[1] % 20

    def by_hand(horizons):
        errors = []
        for g, u, first, horizon in zip(gradients, targets, starts, horizons):
            state = network_state_after(weights, imitator.network_config, g[:first, :5], horizon)
            errors.append(float(imitation_error(weights, imitator.network_config,
                                                g[first:first + 10, :5], u[first:first + 10, :5],
                                                state, first, horizon)))
        return np.mean(errors)

    assert float(error) == pytest.approx(by_hand([20.0, 40.0]), rel=1e-5)
    assert abs(float(error) - by_hand([None, None])) > 1e-4 * float(error)
    imitator.run()
    weight_file = load_weight_file(tmp_path / "horizon.h5")
    assert weight_file.config.horizon_input
    assert weight_file.provenance["problem_steps"] == [20, 40]
    assert "20/40-step runs" in weight_file.description


def test_learned_teacher_spec_names_its_problems(tmp_path):
    teacher = parse_teacher("learned:paper-fmnist-mlp,antisymmetric=1")
    assert teacher == LearnedTeacher("paper-fmnist-mlp", antisymmetric=True)
    assert teacher.path.name == "paper-fmnist-mlp.h5"
    for spec, error, words in [("learned:", ValueError, "weight file or bundled name"),
                               ("learned:paper-fmnist-mlp,lr=1", ValueError, "bad teacher option"),
                               ("learned:paper-fmnist-mlp,antisymmetric=yes", ValueError,
                                "antisymmetric=0"),
                               (f"learned:{tmp_path}/missing.h5", FileNotFoundError,
                                "does not exist"),
                               ("learned:no-such-bundle", klo.UnknownPretrainedError,
                                "bundled weight name")]:
        with pytest.raises(error, match=words):
            parse_teacher(spec)


def test_learned_teacher_runs_as_the_optimizer_runs_its_network():
    """The teacher's run of a bundled network (made antisymmetric) on a problem with several
    variables is the run ``evaluate`` makes with the same weights, told the same horizon."""
    from test_runner import digits_problem

    from keras_learned_opt.unroll import evaluate

    problem, steps = digits_problem(), 20
    teacher = parse_teacher("learned:paper-fmnist-mlp-dbd-rms2,antisymmetric=1")
    gradients, updates, losses = record_teacher(problem, teacher, 3, steps)
    loaded = load_weight_file(teacher.path)
    config = dataclasses.replace(loaded.config, antisymmetric=True)
    expected = evaluate(loaded.arrays, config, problem, [3], steps, unroll=steps)[0]
    np.testing.assert_allclose(losses, expected, rtol=1e-4)
    assert losses[-1] < losses[0] and np.abs(updates).max() > 0
    # ...and a network imitating its own runs, started from its own weights, is exact.
    error = imitation_error({n: np.asarray(a) for n, a in loaded.arrays.items()}, config,
                            gradients, updates, horizon=float(steps))
    assert float(error) < 1e-8


def test_distillation_starts_from_another_files_weights_run_antisymmetrically(tmp_path):
    """--init-from a plain file into an antisymmetric, horizon-reading imitation whose teacher
    is that file run antisymmetrically: the start is the teacher itself (error 0), and the
    output's provenance names the teacher's file by its digest."""
    from test_runner import digits_problem

    from keras_learned_opt.problems import register_problem

    register_problem("digits_distil", digits_problem, overwrite=True)
    source = parse_teacher("learned:paper-fmnist-mlp-dbd-rms2").path
    network = dict(load_weight_file(source).config.to_dict(), antisymmetric=True,
                   horizon_input=True)
    imitator = Imitator(ImitationConfig(
        problems=["digits_distil"], teachers=[f"learned:{source},antisymmetric=1"],
        network=network, init_from=str(source), steps=20, teacher_runs=2, columns=256,
        iterations=2, validate_every=2, validation_seeds=2), tmp_path / "d.h5", verbose=0)
    gradients, targets, _ = imitator.record()
    error = imitation_error(imitator.weights, imitator.network_config, gradients[0],
                            targets[0], horizon=20.0)
    assert float(error) < 1e-8
    imitator.run()
    teacher = load_weight_file(tmp_path / "d.h5").provenance["teachers"][0]
    assert teacher["kind"] == "LearnedTeacher" and teacher["antisymmetric"] is True
    assert len(teacher["sha256"]) == 64 and teacher["path"] == str(source)
