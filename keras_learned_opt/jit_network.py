"""The update network compiled by XLA inside TensorFlow graphs.

Keras runs ``model.fit`` on a CPU-only TensorFlow as a plain graph (its
``jit_compile="auto"`` turns XLA off there), where every element-wise op of
the LSTM is a separate pass over memory. Compiling just the network call with
XLA fuses those passes: on one CPU core, 2x20 network, it took a 1M-coordinate
call from 215 to 139 ms and a 10k one from 2.25 to 1.70 ms
(``benchmarks/update_throughput.py`` has the side-by-side figures).

The cost is one XLA compilation per distinct number of coordinates in a call
(per fused group), paid at the first step. Inside a step that is itself
XLA-compiled, the function is simply inlined.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from keras_learned_opt.network import NetworkConfig, apply_network


class CompiledNetwork:
    """``apply_network`` for one ``config``, as a ``tf.function(jit_compile=True)``.

    A plain (non-trackable) holder, so that the optimizer owning it saves and
    exports exactly as without it.
    """

    def __init__(self, config: NetworkConfig) -> None:
        import tensorflow as tf

        self.config = config
        self._function = tf.function(self._call, jit_compile=True, autograph=False)

    def _call(self, weights, gradient, state, step):
        return apply_network(weights, self.config, gradient, state, step)

    def __call__(self, weights: Mapping[str, Any], config: NetworkConfig, gradient: Any,
                 state: Sequence, step: Any) -> tuple[Any, list]:
        """Same signature and result as ``network.apply_network``."""
        import tensorflow as tf

        if config != self.config:
            raise ValueError(f"compiled for {self.config}, called with {config}")
        # Variables are read once here: the compiled function takes tensors.
        weights = {name: tf.convert_to_tensor(w) for name, w in weights.items()}
        update, new_state = self._function(weights, gradient, list(state),
                                           tf.cast(step, tf.int64))
        return update, list(new_state)

