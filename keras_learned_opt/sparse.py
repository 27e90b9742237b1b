"""Rows-only updates for sparse (``tf.IndexedSlices``) gradients.

An ``Embedding`` layer on the TensorFlow backend gets its gradient as
``tf.IndexedSlices``: ``values [k, *row_shape]`` for the ``k`` looked-up rows
(``indices [k]``, duplicates allowed). Densifying it runs the LSTM on every
coordinate of the table each step, which for a 100k x 32 table costs seconds
(see ``benchmarks/sparse_embedding.py`` and README.md, "Backends and scale"). This path
runs the LSTM only on the looked-up rows and leaves every other row, and its
hidden state, untouched ("lazy" semantics, like sparse Adagrad or LazyAdam).
For the rows it does update, the result is the one the dense computation gives
(tested in ``tests/test_sparse.py``).

Only the TensorFlow backend produces ``IndexedSlices``; JAX and PyTorch
always hand the optimizer dense gradients. TensorFlow is therefore imported
lazily here and never by ``import keras_learned_opt``.
"""

from __future__ import annotations

import sys
from typing import Any, Sequence

import keras

from keras_learned_opt.fused import masked_step

SPARSE_UPDATES = ("rows", "dense")


def is_indexed_slices(gradient: Any) -> bool:
    """Whether ``gradient`` is a ``tf.IndexedSlices`` (False without TensorFlow loaded)."""
    tf = sys.modules.get("tensorflow")
    return tf is not None and isinstance(gradient, tf.IndexedSlices)


def rows_update_step(
    optimizer: Any,
    gradient: Any,
    variable: Any,
    slots: Sequence[Any],
    learning_rate: Any,
) -> None:
    """Apply the learned update to the rows of ``variable`` named by ``gradient``.

    Args:
        optimizer: the ``LearnedOptimizer`` (its network weights, config,
            iteration count and sparse-aware ``assign`` are used).
        gradient: ``tf.IndexedSlices`` with ``values [k, *row_shape]`` and
            ``indices [k]`` into the first axis of ``variable``.
        variable: the variable, ``[rows, *row_shape]``.
        slots: its state variables in ``state_layout`` order, each
            ``[width, rows, *row_shape]``.
        learning_rate: scalar multiplying the network's output.

    Duplicate indices are summed first, as densifying would. The sum goes
    through a dense ``[rows, *row_shape]`` buffer and is gathered back per
    index, so every shape is static (XLA compiles it; ``tf.unique`` would not)
    and duplicate rows compute and write identical values, which makes
    ``scatter_update`` well defined. The buffer costs one float per table entry,
    80 times less than the state the dense path would run through the LSTM.
    """
    import tensorflow as tf

    indices = gradient.indices
    values = tf.cast(gradient.values, "float32")
    rows = variable.shape[0]
    summed = tf.math.unsorted_segment_sum(values, indices, num_segments=rows)
    grad = tf.reshape(tf.gather(summed, indices), [-1])  # [k * row_size]
    old_state = [
        tf.reshape(tf.cast(tf.gather(_tensor(s), indices, axis=1), "float32"), [s.shape[0], -1])
        for s in slots
    ]
    # The same masked step as the dense path, so the same NaN policy: a
    # non-finite gradient or update on any touched row skips the whole
    # variable, state included.
    (update,), (new_state,) = masked_step(
        optimizer._network_weights, optimizer.network_config, [grad], [old_state],
        optimizer.iterations + 1, learning_rate, optimizer.horizon,
    )
    for slot, new in zip(slots, new_state):
        width, row_shape = int(slot.shape[0]), [int(d) for d in tuple(slot.shape)[2:]]
        # Rows of a feature-major slot are on its axis 1, out of reach of
        # scatter_update; scatter_nd on the handle writes just them. Inside
        # tf.distribute's update() the handle is the current device's copy.
        positions = tf.stack(
            [tf.repeat(tf.range(width, dtype=indices.dtype)[:, None], tf.size(indices), axis=1),
             tf.tile(indices[None, :], [width, 1])], axis=-1)  # [width, k, 2]
        tf.raw_ops.ResourceScatterNdUpdate(
            ref=_tensor(slot).handle, indices=positions,
            updates=tf.cast(tf.reshape(new, [width, -1, *row_shape]), slot.dtype))
    old_rows = tf.gather(_tensor(variable), indices)
    # var + cast(update) in the variable's dtype, exactly as assign_add does densely.
    new_rows = old_rows + tf.cast(tf.reshape(update, tf.shape(old_rows)), old_rows.dtype)
    optimizer.assign(variable, tf.IndexedSlices(new_rows, indices))


def _tensor(variable: Any) -> Any:
    """The backend variable behind a ``keras.Variable`` (tf.gather needs it)."""
    return variable.value if isinstance(variable, keras.Variable) else variable
