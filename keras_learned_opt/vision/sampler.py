"""Differentiable affine warping of image batches (the sampler of a spatial transformer).

Conventions (those of Jaderberg et al. 2015, "Spatial Transformer Networks"):
``theta`` is a ``[batch, 2, 3]`` (or ``[batch, 6]``) affine *sampling map*.
Pixel ``p`` of the output, in normalised coordinates ``(x, y)`` in ``[-1, 1]^2``
(``x`` to the right, ``y`` down, -1 and 1 the centres of the first and last
pixel), takes the bilinearly interpolated input at ``theta @ (x, y, 1)``;
points outside the input read zero. ``[[1, 0, 0], [0, 1, 0]]`` is the identity.

Why not ``keras.ops.image``: with the TensorFlow backend ``affine_transform``
has no gradient with respect to the transform (``ImageProjectiveTransformV3``
only differentiates the images), and ``map_coordinates`` needs the size of
every axis, the batch axis included, at trace time, which ``model.fit``'s
traced step does not have (its batch axis is ``None``). ``map_coordinates``
serves as the reference in the tests; this module only adds the batched,
dynamic-batch bilinear gather.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

IDENTITY_THETA = np.array([1.0, 0.0, 0.0, 0.0, 1.0, 0.0], np.float32)


def affine_grid(theta: Any, height: int, width: int) -> tuple[Any, Any]:
    """Input pixel coordinates sampled by each output pixel.

    Args:
        theta: ``[batch, 2, 3]`` or ``[batch, 6]`` sampling maps (see module docstring).
        height, width: output size in pixels; the input is assumed to have the same size.

    Returns:
        ``(rows, cols)``, each ``[batch, height, width]`` in input pixel units
        (row 0 / col 0 is the centre of the first pixel), dtype of ``theta``.
    """
    theta = ops.reshape(theta, (-1, 2, 3))
    dtype = theta.dtype
    ys, xs = ops.meshgrid(ops.linspace(-1.0, 1.0, height), ops.linspace(-1.0, 1.0, width), indexing="ij")
    points = ops.stack([ops.reshape(xs, (-1,)), ops.reshape(ys, (-1,)), ops.ones(height * width)])
    source = ops.einsum("bij,jn->bin", theta, ops.cast(points, dtype))  # [batch, 2, height * width]
    # Normalised -> pixels, -1 and 1 being the centres of the first and last pixel.
    cols = (source[:, 0] + 1.0) * ((width - 1) / 2.0)
    rows = (source[:, 1] + 1.0) * ((height - 1) / 2.0)
    return ops.reshape(rows, (-1, height, width)), ops.reshape(cols, (-1, height, width))


def bilinear_sample(images: Any, rows: Any, cols: Any) -> Any:
    """Bilinear interpolation of each image at its own real-valued pixel coordinates.

    Differentiable with respect to ``images`` and to the coordinates (almost
    everywhere: at integer coordinates the derivative is one-sided). Points
    outside the image blend towards zero, as ``map_coordinates(...,
    fill_mode="constant")`` does. The batch size may be unknown at trace time.

    Args:
        images: ``[batch, H, W, C]`` with static ``H``, ``W``, ``C``.
        rows, cols: ``[batch, H_out, W_out]`` coordinates in pixels.

    Returns:
        ``[batch, H_out, W_out, C]``, dtype of ``images``.
    """
    height, width, channels = (int(d) for d in images.shape[1:])
    dtype = images.dtype
    rows, cols = ops.cast(rows, dtype), ops.cast(cols, dtype)
    flat = ops.reshape(images, (-1, channels))  # [batch * H * W, C]
    batch = ops.shape(images)[0]
    offsets = ops.reshape(ops.arange(batch, dtype="int32") * (height * width), (-1, 1, 1))
    row0, col0 = ops.floor(rows), ops.floor(cols)
    row_weights = (1.0 - (rows - row0), rows - row0)  # the fractional part carries the gradient
    col_weights = (1.0 - (cols - col0), cols - col0)
    result = None
    for dr in (0, 1):
        row = row0 + dr
        row_ok = ops.logical_and(row >= 0, row <= height - 1)
        row_index = ops.cast(ops.clip(row, 0, height - 1), "int32")
        for dc in (0, 1):
            col = col0 + dc
            valid = ops.logical_and(row_ok, ops.logical_and(col >= 0, col <= width - 1))
            index = offsets + row_index * width + ops.cast(ops.clip(col, 0, width - 1), "int32")
            weight = ops.where(valid, row_weights[dr] * col_weights[dc], ops.zeros_like(rows))
            term = ops.take(flat, index, axis=0) * ops.expand_dims(weight, -1)
            result = term if result is None else result + term
    return result


def affine_warp(images: Any, theta: Any) -> Any:
    """Warp ``images`` ``[batch, H, W, C]`` by sampling maps ``theta`` ``[batch, 2, 3]``; same shape out."""
    height, width = int(images.shape[1]), int(images.shape[2])
    rows, cols = affine_grid(ops.cast(theta, images.dtype), height, width)
    return bilinear_sample(images, rows, cols)


@keras.saving.register_keras_serializable(package="keras_learned_opt")
class AffineWarp(keras.layers.Layer):
    """Layer form of ``affine_warp``: ``AffineWarp()(images, theta)`` with ``theta`` ``[batch, 6]``."""

    def call(self, images: Any, theta: Any) -> Any:
        return affine_warp(images, theta)

    def compute_output_shape(self, images_shape: tuple, theta_shape: tuple) -> tuple:
        return images_shape
