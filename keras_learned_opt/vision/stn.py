"""Image alignment with a spatial transformer: random affine distortions and the model.

The task: given a distorted image and the undistorted example it came from,
predict the affine sampling map that warps the distorted image back onto the
example; the loss is the pixel mean squared error between the warped image and
the example. The localisation network sees both images (as two channels), so
it learns registration rather than one canonical pose per class, and can be
tested on classes it never saw.

Distortions (``DistortionRanges``): the distorted image at normalised point
``p`` (see ``sampler``) shows the example at ``R(phi) . s . [[1, k], [0, 1]] . p + t``
with, independently and uniformly,

- rotation ``phi`` in ``[-30, 30]`` degrees,
- scale ``s`` in ``[0.85, 1.15]`` (above 1 the object shrinks and black border
  comes in; below 1 it grows and its edge may leave the frame),
- shear ``k`` in ``[-0.15, 0.15]``,
- translation ``t`` in ``[-0.15, 0.15]^2`` of the half-width (about +-2 pixels
  at 28x28).

The exact inverse map undoes a distortion up to what left the frame and the
blur of interpolating twice: ``oracle_alignment_loss`` measures that floor.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import keras
import numpy as np

from keras_learned_opt.vision.sampler import IDENTITY_THETA, AffineWarp, affine_warp


@dataclasses.dataclass(frozen=True)
class DistortionRanges:
    """Ranges of the random affine distortions (see the module docstring)."""

    rotation_degrees: float = 30.0
    scale: tuple[float, float] = (0.85, 1.15)
    shear: float = 0.15
    translation: float = 0.15


def random_affine(rng: np.random.Generator, count: int,
                  ranges: DistortionRanges = DistortionRanges()) -> np.ndarray:
    """``[count, 2, 3]`` float32 random sampling maps ``[R s Sh | t]``."""
    phi = np.deg2rad(rng.uniform(-ranges.rotation_degrees, ranges.rotation_degrees, count))
    scale = rng.uniform(*ranges.scale, count)
    shear = rng.uniform(-ranges.shear, ranges.shear, count)
    shift = rng.uniform(-ranges.translation, ranges.translation, (count, 2))
    cos, sin = np.cos(phi), np.sin(phi)
    rotation = np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], -2)  # [count, 2, 2]
    shear_matrix = np.zeros((count, 2, 2))
    shear_matrix[:, 0, 0] = shear_matrix[:, 1, 1] = 1.0
    shear_matrix[:, 0, 1] = shear
    linear = rotation @ shear_matrix * scale[:, None, None]
    return np.concatenate([linear, shift[:, :, None]], axis=2).astype(np.float32)


def invert_affine(theta: np.ndarray) -> np.ndarray:
    """``[n, 2, 3]`` inverse maps: warping by ``theta`` then by the inverse is the identity."""
    theta = np.asarray(theta, np.float64)
    full = np.concatenate([theta, np.tile([[[0.0, 0.0, 1.0]]], (len(theta), 1, 1))], axis=1)
    # warp(warp(img, a), b)(p) = img(a b p): the second warp's map is applied first.
    return np.linalg.inv(full)[:, :2].astype(np.float32)


def _warp_numpy(images: np.ndarray, theta: np.ndarray, batch: int = 1024) -> np.ndarray:
    return np.concatenate([
        keras.ops.convert_to_numpy(affine_warp(images[i:i + batch], theta[i:i + batch]))
        for i in range(0, len(images), batch)
    ])


def make_alignment_pairs(images: np.ndarray, rng: np.random.Generator,
                         ranges: DistortionRanges = DistortionRanges()
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distort each image once.

    Args:
        images: ``[n, H, W, C]`` float32 examples.

    Returns:
        ``x`` ``[n, H, W, 2C]`` (distorted image, then the example, along
        channels), ``y`` ``[n, H, W, C]`` (the example, the target) and the
        distortions ``[n, 2, 3]``.
    """
    images = np.asarray(images, np.float32)
    theta = random_affine(rng, len(images), ranges)
    distorted = _warp_numpy(images, theta)
    return np.concatenate([distorted, images], axis=-1), images, theta


def oracle_alignment_loss(x: np.ndarray, y: np.ndarray, theta: np.ndarray) -> float:
    """Pixel MSE after warping with the exact inverse of each distortion (the attainable floor)."""
    channels = y.shape[-1]
    return float(np.mean((_warp_numpy(x[..., :channels], invert_affine(theta)) - y) ** 2))


def identity_alignment_loss(x: np.ndarray, y: np.ndarray) -> float:
    """Pixel MSE of not warping at all (what the model starts from)."""
    return float(np.mean((x[..., : y.shape[-1]] - y) ** 2))


def build_alignment_stn(image_shape: Sequence[int] = (28, 28, 1)) -> keras.Model:
    """Localisation CNN + affine sampler; ``[batch, H, W, 2C]`` pairs -> warped images ``[batch, H, W, C]``.

    conv(16, 5)-pool-conv(32, 5)-pool-dense(64)-dense(6). The last layer starts
    with a zero kernel and the identity as bias, so the untrained model returns
    its input unchanged (Jaderberg et al. 2015) and training starts from a
    sensible alignment instead of a random warp.
    """
    height, width, channels = (int(d) for d in image_shape)
    pair = keras.Input((height, width, 2 * channels), name="distorted_and_example")
    hidden = keras.layers.Conv2D(16, 5, padding="same", activation="relu")(pair)
    hidden = keras.layers.MaxPooling2D()(hidden)
    hidden = keras.layers.Conv2D(32, 5, activation="relu")(hidden)
    hidden = keras.layers.MaxPooling2D()(hidden)
    hidden = keras.layers.Flatten()(hidden)
    hidden = keras.layers.Dense(64, activation="relu")(hidden)
    theta = keras.layers.Dense(6, kernel_initializer="zeros",
                               bias_initializer=keras.initializers.Constant(IDENTITY_THETA),
                               name="theta")(hidden)
    warped = AffineWarp(name="warp")(pair[..., :channels], theta)
    return keras.Model(pair, warped, name="alignment_stn")
