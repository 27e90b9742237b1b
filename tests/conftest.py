"""Shared fixtures: small weight files made by the tests themselves."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from keras_learned_opt.network import NetworkConfig, initial_weights  # noqa: E402
from keras_learned_opt.weights import save_weight_file  # noqa: E402

# Test files that run on every Keras backend (KERAS_BACKEND=jax|torch|tensorflow);
# the rest drive TensorFlow-only code (meta-trainer, runner, tf.distribute) or
# start subprocesses on each backend themselves (test_backends.py).
BACKEND_AGNOSTIC = {
    "test_optimizer.py", "test_mixed_precision.py", "test_sparse.py", "test_network.py",
    "test_weights.py", "test_pretrained.py",
}


def pytest_ignore_collect(collection_path, config):
    import keras

    if keras.backend.backend() == "tensorflow" or collection_path.is_dir():
        return None
    name = collection_path.name
    if name.startswith("test_") and name.endswith(".py") and name not in BACKEND_AGNOSTIC:
        return True
    return None


def sign_descent_weights(config: NetworkConfig, gain: float = 3.0) -> dict:
    """Hand-set weights for which the LSTM computes about -0.75 * sign(gradient).

    Layer 0 copies the LogAndSign direction feature (= sign g for |g| >= e^-p)
    into its cell through the g-gate with the input and output gates open and
    the forget gate shut; each later layer copies the mean of the layer below;
    the output layer averages and negates. A known, meaningful optimizer that
    lets tests check that training really descends.
    """
    assert config.input_features == "log_and_sign" and not config.input_layer_size
    weights = {name: np.zeros_like(v) for name, v in initial_weights(config).items()}
    width = config.feature_count
    for i, units in enumerate(config.hidden_sizes):
        kernel = weights[f"lstm_{i}/kernel"]
        bias = weights[f"lstm_{i}/bias"]
        bias[:units] = 10.0  # input gate open
        bias[units : 2 * units] = -10.0  # forget gate shut
        bias[3 * units :] = 10.0  # output gate open
        if i == 0:
            kernel[1, 2 * units : 3 * units] = gain  # direction feature -> cell input
        else:
            kernel[:width, 2 * units : 3 * units] = gain / width
        width = units
    weights["output/kernel"][:, 0] = -1.0 / width
    return weights


@pytest.fixture
def paper_config():
    return NetworkConfig(hidden_sizes=(20, 20), input_features="log_and_sign", output_scale=0.1)


@pytest.fixture
def sign_descent_file(tmp_path, paper_config):
    path = tmp_path / "sign_descent.h5"
    save_weight_file(
        path, sign_descent_weights(paper_config), paper_config,
        provenance={"made_by": "tests/conftest.py sign_descent_weights"},
        description="hand-set sign descent (tests only)",
    )
    return path


@pytest.fixture
def random_weight_file(tmp_path, paper_config):
    rng = np.random.default_rng(7)
    weights = {k: rng.normal(0, 0.3, v.shape).astype(np.float32)
               for k, v in initial_weights(paper_config).items()}
    path = tmp_path / "random.h5"
    save_weight_file(path, weights, paper_config, provenance={}, description="random (tests only)")
    return path
