"""keras_learned_opt.vision: the affine sampler (identity, reference, gradients), the STN, datasets."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_learned_opt.vision import datasets
from keras_learned_opt.vision.sampler import affine_grid, affine_warp
from keras_learned_opt.vision.stn import (
    build_alignment_stn,
    identity_alignment_loss,
    invert_affine,
    make_alignment_pairs,
    oracle_alignment_loss,
    random_affine,
)

IDENTITY = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


def _images(batch=3, height=7, width=9, channels=2, dtype="float32"):
    return np.random.default_rng(0).random((batch, height, width, channels)).astype(dtype)


def _near_identity(batch, dtype, scale=0.2):
    noise = np.random.default_rng(1).normal(0.0, scale, (batch, 2, 3))
    return (IDENTITY + noise).astype(dtype)


def test_identity_transform_returns_the_input():
    images = _images()
    theta = np.tile(IDENTITY, (len(images), 1, 1)).astype("float32")
    np.testing.assert_allclose(affine_warp(images, theta).numpy(), images, atol=1e-5)


def test_sampler_matches_keras_map_coordinates():
    # map_coordinates is the library's reference bilinear interpolation; it only
    # lacks a dynamic batch axis, which is what affine_warp adds.
    images = _images()
    theta = _near_identity(len(images), "float32")
    warped = affine_warp(images, theta).numpy()
    rows, cols = (a.numpy() for a in affine_grid(theta, 7, 9))
    for b in range(len(images)):
        for c in range(images.shape[-1]):
            expected = keras.ops.image.map_coordinates(images[b, :, :, c], np.stack([rows[b], cols[b]]),
                                                       order=1, fill_mode="constant")
            np.testing.assert_allclose(warped[b, :, :, c], expected, atol=1e-5)


def test_gradients_wrt_transform_are_nonzero_and_match_finite_differences():
    images = _images(batch=2, height=8, width=8, channels=1, dtype="float64")
    theta = _near_identity(2, "float64")
    weights = np.random.default_rng(2).normal(size=images.shape)

    def objective(t):
        return tf.reduce_sum(weights * affine_warp(images, t))

    rows, cols = (a.numpy() for a in affine_grid(theta, 8, 8))
    fractions = np.concatenate([(rows % 1).ravel(), (cols % 1).ravel()])
    # Bilinear interpolation has kinks at integer coordinates; keep the check away from them.
    assert np.min(np.minimum(fractions, 1 - fractions)) > 1e-4
    variable = tf.Variable(theta)
    with tf.GradientTape() as tape:
        value = objective(variable)
    analytic = tape.gradient(value, variable).numpy()
    assert np.all(np.abs(analytic) > 1e-6), analytic  # every entry of every map moves the output

    eps = 1e-6
    numeric = np.zeros_like(theta)
    for index in np.ndindex(theta.shape):
        plus, minus = theta.copy(), theta.copy()
        plus[index] += eps
        minus[index] -= eps
        numeric[index] = (objective(plus).numpy() - objective(minus).numpy()) / (2 * eps)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-7)


def test_sampler_traces_with_an_unknown_batch_size():
    images = _images()
    theta = _near_identity(len(images), "float32")
    traced = tf.function(affine_warp, input_signature=[tf.TensorSpec((None, 7, 9, 2)),
                                                       tf.TensorSpec((None, 2, 3))])
    np.testing.assert_allclose(traced(images, theta).numpy(), affine_warp(images, theta).numpy(), atol=1e-6)


def test_inverse_map_undoes_a_distortion():
    theta = random_affine(np.random.default_rng(3), 5)
    full = lambda t: np.concatenate([t, np.tile([[[0, 0, 1]]], (len(t), 1, 1))], axis=1)  # noqa: E731
    np.testing.assert_allclose(full(theta) @ full(invert_affine(theta)), np.tile(np.eye(3), (5, 1, 1)),
                               atol=1e-5)


def test_alignment_model_starts_at_the_identity_and_oracle_beats_doing_nothing():
    rng = np.random.default_rng(4)
    examples = np.zeros((16, 28, 28, 1), np.float32)
    examples[:, 6:22, 9:19] = rng.random((16, 16, 10, 1))  # objects well inside the frame
    x, y, theta = make_alignment_pairs(examples, rng)
    assert x.shape == (16, 28, 28, 2) and y.shape == (16, 28, 28, 1)
    model = build_alignment_stn((28, 28, 1))
    np.testing.assert_allclose(model.predict(x, verbose=0), x[..., :1], atol=1e-5)
    assert oracle_alignment_loss(x, y, theta) < 0.5 * identity_alignment_loss(x, y)


def test_failed_download_says_what_to_do(monkeypatch):
    def offline():
        raise OSError("no route to host")

    monkeypatch.setattr(keras.datasets.mnist, "load_data", offline)
    with pytest.raises(datasets.DatasetUnavailableError, match="internet.*fashion_mnist"):
        datasets.load_image_dataset("mnist")
    with pytest.raises(ValueError, match="unknown dataset"):
        datasets.load_image_dataset("imagenet")
