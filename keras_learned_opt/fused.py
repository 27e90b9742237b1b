"""One network call for the coordinates of several variables, with per-variable NaN policy.

``LearnedOptimizer`` updates a *group* of variables at once: their flattened
gradients and states are concatenated into one batch of coordinates, the
update network (``network.apply_network``, the only copy of the LSTM math)
runs once on that batch, and the results are split back per variable. Because
the network treats each coordinate on its own, a coordinate's result does not
depend on which others share its batch, so the fused result equals the
per-variable one up to float rounding, and a NaN in one variable cannot leak
into another.

The per-variable path is the same function called with a group of one
variable, so both paths share the masking rule: a variable whose gradient or
update has a non-finite entry gets a zero update and keeps its old state.

Shapes: variable ``k`` has ``n_k`` coordinates; ``gradients[k]`` is ``[n_k]``
float32; ``states[k]`` is a list in ``network.state_layout`` order of
``[width, n_k]`` float32 tensors (feature-major, as ``network`` computes).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
from keras import ops

from keras_learned_opt.network import NetworkConfig, apply_network


# Default of LearnedOptimizer(fused_alone_size=...): variables of at least this
# many coordinates get a network call of their own. Fusing a variable saves the
# fixed cost of a call (some 40 small ops, 0.1-0.2 ms on a 2-core CPU with
# TensorFlow) but copies its state floats into and out of the concatenated
# batch (about 0.1 us per coordinate there, some 30% of the LSTM's own cost):
# on that machine fusing pays for variables below about 1-2k coordinates.
# Measured: benchmarks/README.md.
ALONE_ROWS = 1024


def plan_groups(sizes: Sequence[int], max_rows: int | None,
                alone_rows: int = ALONE_ROWS) -> list[list[int]]:
    """Variable indices grouped for one network call per group.

    A variable of ``alone_rows`` coordinates or more is a group on its own (no
    copying in or out). Smaller variables are packed, in order, into groups of
    at most ``max_rows`` coordinates, bounding the transient memory of the
    concatenated batch. ``max_rows`` of ``None`` or ``0`` means no bound; then
    with ``alone_rows=0`` every variable shares one call.
    """
    alone_rows = min(alone_rows, max_rows) if max_rows else alone_rows
    groups: list[list[int]] = []
    current: list[int] = []
    rows = 0
    for index, size in enumerate(sizes):
        if alone_rows and size >= alone_rows:
            groups.append([index])
            continue
        if current and max_rows and rows + size > max_rows:
            groups.append(current)
            current, rows = [], 0
        current.append(index)
        rows += size
    if current:
        groups.append(current)
    return groups


def plan_waves(rows: Sequence[int], max_rows: int | None) -> list[list[int]]:
    """Consecutive group indices in waves of about ``max_rows`` coordinates.

    A wave closes once it holds ``max_rows`` coordinates or more, so each wave
    but the last holds at least that many (and at most one group more).
    ``None`` or ``0``: one wave.
    """
    waves: list[list[int]] = []
    current: list[int] = []
    total = 0
    for index, n in enumerate(rows):
        current.append(index)
        total += n
        if max_rows and total >= max_rows:
            waves.append(current)
            current, total = [], 0
    if current:
        waves.append(current)
    return waves


def _split(tensor: Any, sizes: Sequence[int], axis: int = 0) -> list:
    """``tensor`` split along ``axis`` into pieces of ``sizes`` entries."""
    if len(sizes) == 1:
        return [tensor]
    return ops.split(tensor, np.cumsum(sizes)[:-1].tolist(), axis=axis)


def masked_step(
    weights: Mapping[str, Any],
    config: NetworkConfig,
    gradients: Sequence,
    states: Sequence[Sequence],
    step: Any,
    learning_rate: Any,
    horizon: Any = None,
) -> tuple[list, list[list]]:
    """Updates and new states of a group of variables, with one network call.

    Args:
        weights, config: the update network (see ``network.apply_network``).
        gradients: ``[n_k]`` float32 per variable.
        states: per variable, the state list of ``[width, n_k]`` float32.
        step: 1-based step, scalar.
        learning_rate: scalar multiplying the network output.
        horizon: the run's length in steps (``None`` or 0: unknown), for
            networks with ``horizon_input``.

    Returns:
        ``(updates, new_states)``: per variable the ``[n_k]`` update to add
        (already multiplied by the learning rate; zero for a variable with a
        non-finite gradient or update) and its new state list (the old state
        for such a variable).
    """
    sizes = [g.shape[0] for g in gradients]  # static except for a lone sparse gradient
    if len(gradients) == 1:
        gradient, state = gradients[0], list(states[0])
    else:
        gradient = ops.concatenate(list(gradients), axis=0)
        state = [ops.concatenate([s[j] for s in states], axis=1) for j in range(len(states[0]))]
    update, new_state = apply_network(weights, config, gradient, state, step, horizon)
    update = update * ops.cast(learning_rate, "float32")
    row_ok = ops.logical_and(ops.isfinite(gradient), ops.isfinite(update))

    def keep_bad_variables():
        if len(sizes) == 1:
            ok = ops.all(row_ok)  # scalar: broadcasts in the selects below
            ok_2d = ok
        else:
            # Per-variable verdict in a few ops whatever the number of variables:
            # count the bad rows of each segment, then spread it back to its rows.
            # (unsorted + num_segments: the form every backend accepts statically)
            segment_ids = np.repeat(np.arange(len(sizes), dtype=np.int32), sizes)
            bad_rows = ops.cast(ops.logical_not(row_ok), "int32")
            bad = ops.segment_sum(bad_rows, segment_ids, num_segments=len(sizes))
            ok = ops.take(ops.equal(bad, 0), segment_ids, axis=0)
            ok_2d = ops.expand_dims(ok, 0)
        return (ops.where(ok, update, ops.zeros_like(update)),
                [ops.where(ok_2d, new, old) for new, old in zip(new_state, state)])

    # The selects read and write every state float again (about a fifth of
    # the step's time for 2x20): take them only when some entry is non-finite.
    kept_update, kept_state = ops.cond(
        ops.all(row_ok), lambda: (update, list(new_state)), keep_bad_variables
    )

    updates = _split(kept_update, sizes)
    pieces = [_split(s, sizes, axis=1) for s in kept_state]
    return updates, [[p[k] for p in pieces] for k in range(len(sizes))]
