"""`LearnedOptimizer`: a Keras 3 optimizer whose update is the learned LSTM."""

from __future__ import annotations

import contextlib
import os
from typing import Any

import keras
import numpy as np
from keras import ops

from keras_learned_opt.errors import (
    ArchitectureMismatchError,
    NoPretrainedWeightsError,
    UnknownPretrainedError,
)
from keras_learned_opt.network import NetworkConfig, apply_network, state_layout, weight_shapes
from keras_learned_opt.bundled import default_pretrained_name, resolve_weights
from keras_learned_opt.sparse import SPARSE_UPDATES, is_indexed_slices, rows_update_step
from keras_learned_opt.weights import load_weight_file


def _slot_name(variable: Any, tag: str) -> str:
    base = getattr(variable, "path", None) or str(variable.name)
    return f"{base.replace('/', '_').replace(':', '_')}_{tag}"


@keras.saving.register_keras_serializable(package="keras_learned_opt")
class LearnedOptimizer(keras.optimizers.Optimizer):
    """Optimizer whose update rule is a meta-trained coordinate-wise LSTM.

    Every scalar parameter ``theta`` is updated as
    ``theta += learning_rate * network(gradient, state)`` (Andrychowicz et al.
    2016). The network is shared by all coordinates; each coordinate keeps its
    own LSTM hidden and cell state, stored as optimizer variables of shape
    ``variable.shape + (units,)`` so they are saved, restored and distributed
    like Adam's moments. The network's own arrays are optimizer variables too,
    so a saved model restores without the original weight file.

    A variable whose gradient (or computed update) contains NaN or Inf is left
    unchanged for that step, together with its hidden state; other variables
    are updated normally.

    Args:
        weights: a bundled weight name (see ``list_pretrained()``), a path to a
            weight file, or ``None`` for the recommended bundled file. The
            architecture is read from the file.
        learning_rate: multiplies the network's output; 1.0 applies the update
            the network was meta-trained to make. Schedules are accepted.
        state_dtype: dtype of the per-coordinate state (``"float32"`` or
            ``"bfloat16"``); the update math always runs in float32.
        sparse_updates: for sparse gradients (``tf.IndexedSlices``, e.g. an
            ``Embedding`` on TensorFlow), ``"rows"`` updates only the looked-up
            rows and their state; ``"dense"`` densifies and updates every row
            (what JAX and PyTorch, which have no sparse gradients, always do).
            See ``keras_learned_opt/sparse.py``.
        network_config: used by ``from_config`` so that a saved model can be
            restored where its weight file is absent; leave it ``None``.
        name, weight_decay, clipnorm, clipvalue, global_clipnorm, use_ema,
        ema_momentum, ema_overwrite_frequency, loss_scale_factor,
        gradient_accumulation_steps: as for every Keras optimizer.
    """

    def __init__(
        self,
        weights: str | os.PathLike | None = None,
        learning_rate: Any = 1.0,
        state_dtype: str = "float32",
        network_config: dict | None = None,
        name: str | None = None,
        sparse_updates: str = "rows",
        **kwargs: Any,
    ) -> None:
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        if state_dtype not in ("float32", "bfloat16"):
            raise ValueError(f"state_dtype must be 'float32' or 'bfloat16', got {state_dtype!r}")
        self.state_dtype = state_dtype
        if sparse_updates not in SPARSE_UPDATES:
            raise ValueError(f"sparse_updates must be one of {SPARSE_UPDATES}, got {sparse_updates!r}")
        self.sparse_updates = sparse_updates
        self._load_network(weights, network_config)

    def _load_network(self, weights: Any, network_config: dict | None) -> None:
        expected = NetworkConfig.from_dict(network_config) if network_config else None
        if weights is None:
            weights = default_pretrained_name()
        self.weights_source = os.fspath(weights)
        try:
            weight_file = load_weight_file(resolve_weights(weights))
        except (FileNotFoundError, UnknownPretrainedError, NoPretrainedWeightsError):
            if expected is None:
                raise
            # Restoring a saved model on a machine without the file: the arrays
            # arrive with the optimizer's saved variables (see load_own_variables).
            self.network_config = expected
            self._initial_network_arrays = {
                name: np.full(shape, np.nan, np.float32)
                for name, shape in weight_shapes(expected).items()
            }
            self.provenance: dict = {}
            self._awaiting_restore = True
            return
        if expected is not None and expected != weight_file.config:
            raise ArchitectureMismatchError(
                f"weight file '{weight_file.path}' holds {weight_file.config}, but the saved "
                f"optimizer expects {expected}"
            )
        self.network_config = weight_file.config
        self._initial_network_arrays = weight_file.arrays
        self.provenance = weight_file.provenance
        self._awaiting_restore = False

    @contextlib.contextmanager
    def _creation_scope(self, reference: Any = None):
        """Create slots eagerly, next to their variable (keras-team/keras#23085)."""
        if keras.backend.backend() != "tensorflow":
            yield
            return
        import tensorflow as tf

        with tf.init_scope():
            if reference is None:
                yield
                return
            value = reference.value if isinstance(reference, keras.Variable) else reference
            with self._distribution_strategy.extended.colocate_vars_with(value):
                yield

    def build(self, var_list: list) -> None:
        if self.built:
            return
        for variable in var_list:
            if not keras.backend.is_float_dtype(variable.dtype):
                raise TypeError(
                    f"LearnedOptimizer can only train floating-point variables; "
                    f"'{getattr(variable, 'path', variable.name)}' has dtype {variable.dtype}"
                )
        super().build(var_list)
        # Creation order fixes the saved position of each variable, so it must
        # not depend on where the arrays came from: use the architecture's order.
        with self._creation_scope():
            self._network_weights = {
                name: self.add_variable(
                    shape=shape,
                    initializer=lambda shape, dtype, value=self._initial_network_arrays[name]: (
                        ops.convert_to_tensor(value, dtype)
                    ),
                    dtype="float32",
                    name="network_" + name.replace("/", "_"),
                )
                for name, shape in weight_shapes(self.network_config).items()
            }
        layout = state_layout(self.network_config)
        self._state_slots = []
        for variable in var_list:
            with self._creation_scope(variable):
                self._state_slots.append(
                    [
                        self.add_variable(
                            shape=tuple(variable.shape) + (width,),
                            dtype=self.state_dtype,
                            name=_slot_name(variable, tag),
                        )
                        for tag, width in layout
                    ]
                )

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        if self._awaiting_restore:
            raise RuntimeError(
                f"LearnedOptimizer was re-created from a config whose weight file "
                f"'{self.weights_source}' is not available here, and its saved variables "
                "were never loaded; load the model with keras.models.load_model or load its weights"
            )
        slots = self._state_slots[self._get_variable_index(variable)]
        if self.sparse_updates == "rows" and is_indexed_slices(gradient):
            return rows_update_step(self, gradient, variable, slots, learning_rate)
        grad = ops.reshape(ops.cast(ops.convert_to_tensor(gradient, sparse=False), "float32"), (-1,))
        state = [ops.reshape(ops.cast(s, "float32"), (-1, s.shape[-1])) for s in slots]
        update, new_state = apply_network(
            self._network_weights, self.network_config, grad, state, self.iterations + 1
        )
        update = update * ops.cast(learning_rate, "float32")
        finite = ops.logical_and(ops.all(ops.isfinite(grad)), ops.all(ops.isfinite(update)))
        for slot, old, new in zip(slots, state, new_state):
            self.assign(slot, ops.reshape(ops.where(finite, new, old), slot.shape))
        update = ops.where(finite, update, ops.zeros_like(update))
        self.assign_add(variable, ops.cast(ops.reshape(update, variable.shape), variable.dtype))

    def load_own_variables(self, store: Any) -> None:
        super().load_own_variables(store)
        if len(store.keys()) == len(self.variables):
            self._awaiting_restore = False

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "weights": self.weights_source,
                "state_dtype": self.state_dtype,
                "sparse_updates": self.sparse_updates,
                "network_config": self.network_config.to_dict(),
            }
        )
        return config
