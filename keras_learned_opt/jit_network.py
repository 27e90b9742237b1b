"""A group's whole update compiled by XLA inside TensorFlow graphs.

Keras runs ``model.fit`` on a CPU-only TensorFlow as a plain graph (its
``jit_compile="auto"`` turns XLA off there), where every element-wise op of
the LSTM is a separate pass over memory. Compiling the network call with XLA
fuses those passes: on one CPU core, 2x20 network, it took a 1M-coordinate
call from 215 to 139 ms and a 10k one from 2.25 to 1.70 ms
(``benchmarks/update_throughput.py`` has the side-by-side figures).
Compiling the whole group step (``fused.masked_step``: concatenation of the
group's gradients and states, the network, the finiteness check, the split
back per variable) instead of the network alone took a further 5% off the
Fashion-MNIST MLP's ``fit`` step (one core: 5.72x Adam's step against 5.99x
and 6.06x, measured alternately, ``benchmarks/fit_step_ratio.py``).

Since 0.9 the compiled function also reads the state slots and writes them
and the variables back (``read_group`` / ``write_group``), so the graph around
it no longer carries some fifteen small reshape, cast and assign ops per
variable. Measured side by side against 0.8's form, this changed the step
time by -8% to +6% across models of 16 and 128 variables, within the
run-to-run spread (benchmarks/README.md, "Probes in 0.9"); it stays because
the TensorFlow graph of a step is smaller and the assignment code is shared
with the plain path.

The cost is one XLA compilation per distinct group (its variables' sizes),
paid at the first step. Inside a step that is itself XLA-compiled, the
function is simply inlined.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np
from keras import ops

from keras_learned_opt.network import NetworkConfig


def read_group(gradients: Sequence, variables: Sequence, slots: Sequence[Sequence]) -> tuple[list, list]:
    """Flat float32 gradients ``[n_k]`` and states ``[width, n_k]`` of a group of variables.

    Row counts come from the variables: a gradient's shape can be unknown in
    the graph (e.g. densified IndexedSlices under a LossScaleOptimizer).
    """
    sizes = [int(np.prod(v.shape)) for v in variables]
    flat_grads = [
        # Sparse gradients (IndexedSlices) are densified: every coordinate's
        # LSTM steps each iteration, whether its gradient is zero or not.
        ops.reshape(ops.cast(ops.convert_to_tensor(g, sparse=False), "float32"), (n,))
        for g, n in zip(gradients, sizes)
    ]
    states = [[ops.reshape(ops.cast(s, "float32"), (s.shape[0], n)) for s in var_slots]
              for var_slots, n in zip(slots, sizes)]
    return flat_grads, states


def write_group(variables: Sequence, slots: Sequence[Sequence], updates: Sequence,
                new_states: Sequence[Sequence], assign: Callable, assign_add: Callable) -> None:
    """Store each variable's new state in its slots and add its update to it."""
    for variable, var_slots, update, new_state in zip(variables, slots, updates, new_states):
        for slot, value in zip(var_slots, new_state):
            assign(slot, ops.cast(ops.reshape(value, slot.shape), slot.dtype))
        assign_add(variable, ops.cast(ops.reshape(update, variable.shape), variable.dtype))


class CompiledGroupUpdate:
    """A group's update, slots and variables included, as one ``tf.function(jit_compile=True)``.

    Compiling the whole group update lets XLA fuse the concatenation of the
    group's gradients and states, the finiteness check and the split back per
    variable with the LSTM's element-wise work, and keeps the per-variable
    reads and writes out of the TensorFlow graph.
    """

    def __init__(self, config: NetworkConfig) -> None:
        import tensorflow as tf

        self.config = config
        self._function = tf.function(self._call, jit_compile=True, autograph=False)

    def _call(self, weights, gradients, variables, slots, step, learning_rate, horizon):
        from keras_learned_opt.fused import masked_step

        flat_grads, states = read_group(gradients, variables, slots)
        updates, new_states = masked_step(weights, self.config, flat_grads, states, step,
                                          learning_rate, horizon)
        write_group(variables, slots, updates, new_states,
                    lambda target, value: target.assign(value),
                    lambda target, value: target.assign_add(value))
        return updates

    def __call__(self, weights: Mapping[str, Any], gradients: Sequence, variables: Sequence,
                 slots: Sequence[Sequence], step: Any, learning_rate: Any,
                 horizon: Any = None) -> list:
        """Update ``variables`` (``keras.Variable``) and their ``slots`` in place.

        Args:
            weights: the network's arrays (tensors or ``keras.Variable``).
            gradients: one per variable, any float dtype, dense or IndexedSlices.
            variables, slots: the model variables and, per variable, its state
                slots in ``network.state_layout`` order.
            step: 1-based step; learning_rate: scalar; horizon: the run's
                length in steps, 0 or ``None`` when unknown.

        Returns:
            The flat ``[n_k]`` float32 update of each variable (for ordering).
        """
        import keras
        import tensorflow as tf

        def handle(variable):  # the tf.Variable behind a keras.Variable
            return variable.value if isinstance(variable, keras.Variable) else variable

        weights = {name: tf.convert_to_tensor(handle(w)) for name, w in weights.items()}
        # Densified here: IndexedSlices would be densified inside anyway.
        gradients = [ops.convert_to_tensor(g, sparse=False) for g in gradients]
        updates = self._function(
            weights, gradients, [handle(v) for v in variables],
            [[handle(s) for s in var_slots] for var_slots in slots],
            tf.cast(step, tf.int64), tf.cast(learning_rate, tf.float32),
            tf.cast(0.0 if horizon is None else handle(horizon), tf.float32))
        return list(updates)
