"""The update of a group of variables compiled by XLA inside TensorFlow graphs.

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

The cost is one XLA compilation per distinct group (its variables' sizes),
paid at the first step. Inside a step that is itself XLA-compiled, the
function is simply inlined.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from keras_learned_opt.network import NetworkConfig


class CompiledStep:
    """``fused.masked_step`` for one ``config``, as one ``tf.function(jit_compile=True)``.

    Compiling the whole group step, not only the network call, lets XLA fuse
    the concatenation of the group's gradients and states, the finiteness
    check and the split back per variable with the LSTM's element-wise work.
    """

    def __init__(self, config: NetworkConfig) -> None:
        import tensorflow as tf

        self.config = config
        self._function = tf.function(self._call, jit_compile=True, autograph=False)

    def _call(self, weights, gradients, states, step, learning_rate):
        from keras_learned_opt.fused import masked_step

        return masked_step(weights, self.config, gradients, states, step, learning_rate)

    def __call__(self, weights: Mapping[str, Any], config: NetworkConfig, gradients: Sequence,
                 states: Sequence[Sequence], step: Any, learning_rate: Any) -> tuple[list, list]:
        """Same signature and result as ``fused.masked_step`` (without ``network``)."""
        import tensorflow as tf

        if config != self.config:
            raise ValueError(f"compiled for {self.config}, called with {config}")
        weights = {name: tf.convert_to_tensor(w) for name, w in weights.items()}
        updates, new_states = self._function(
            weights, list(gradients), [list(s) for s in states], tf.cast(step, tf.int64),
            tf.cast(learning_rate, tf.float32))
        return list(updates), [list(s) for s in new_states]
