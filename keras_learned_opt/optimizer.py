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
from keras_learned_opt.fused import ALONE_ROWS, masked_step, plan_groups, plan_waves
from keras_learned_opt.jit_network import CompiledGroupUpdate, read_group, write_group
from keras_learned_opt.network import NetworkConfig, state_layout, weight_shapes
from keras_learned_opt.bundled import default_pretrained_name, resolve_weights
from keras_learned_opt.sparse import SPARSE_UPDATES, is_indexed_slices, rows_update_step
from keras_learned_opt.weights import load_weight_file


# What ``fused="auto"`` means per backend, from side-by-side measurements
# (benchmarks/README.md). TensorFlow (graph and XLA, CPU): fusing the small
# variables is faster (1.5-1.8x for models of many small tensors) and the
# large ones run alone, so it is never slower than per-variable. JAX (jit,
# CPU): the same grouping measured equal to per-variable within noise, and one
# call for everything 1.3-1.4x slower, so per-variable stays. Torch runs
# optimizers eagerly, one Python dispatch per op, where one call for all
# variables halved the step (measured before this option existed; torch is
# not installed here to re-measure).
_FUSED_BY_BACKEND = {"tensorflow": True, "torch": True, "jax": False}

# Coordinates per fused network call and per wave of concurrently updated
# groups: bounds the step's transient memory (about 1 kB per coordinate in
# flight for 2x20; 2^16 took 100 MiB off a 1M-parameter step's peak compared
# with 2^18) at no measurable cost in speed, since the matmuls are already
# large at this size.
DEFAULT_FUSED_GROUP_SIZE = 2**16


def _after(tensors: list):
    """Ops created in this context run after ``tensors`` are computed (TF graphs only).

    TensorFlow's executor runs independent op chains concurrently, so without
    an order the transient tensors of every group would be alive at once and
    grouping would not bound the step's peak memory.
    """
    if not tensors or keras.backend.backend() != "tensorflow":
        return contextlib.nullcontext()
    import tensorflow as tf

    if tf.executing_eagerly():
        return contextlib.nullcontext()
    return tf.control_dependencies(tensors)


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
    ``(units,) + variable.shape`` (feature-major, the layout the network
    computes in; see ``network.py``) so they are saved, restored and
    distributed like Adam's moments. The network's own arrays are optimizer variables too,
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
        fused: ``True`` runs the network once over the concatenated
            coordinates of many variables (see the two options below);
            ``False`` runs it once per variable; ``"auto"`` picks what was
            measured faster for the backend. Results agree to float rounding;
            the state slots are the same either way, so checkpoints move freely
            between the two. Under a ``tf.distribute`` strategy the
            per-variable path is used.
        fused_group_size: most coordinates per fused call, and about the most
            updated at once (groups run in waves of this many coordinates):
            bounds the step's transient memory, about 1 kB per coordinate in
            flight for 2x20. ``0`` means no bound.
        fused_alone_size: variables of at least this many coordinates get a
            call of their own, since copying their state into a concatenation
            costs more than a call (on CPU); ``0`` fuses every variable, which
            may pay where each op has a high fixed cost (GPU kernel launches).
        jit_network: compile each group's update (the network call with the
            concatenation and split around it) with XLA inside TensorFlow
            graphs (``keras_learned_opt/jit_network.py``): the LSTM's
            element-wise work fused, at the price of one compilation per
            distinct group at the first step. ``"auto"`` (the default)
            does so on TensorFlow outside ``tf.distribute`` strategies;
            ``True`` asks for it and is an error on other backends, whose
            compiled steps (``jax.jit``) already fuse.
        total_steps: the number of steps this optimizer will take (e.g.
            ``epochs * steps_per_epoch``, or let ``TotalStepsFromFit`` set it),
            read by weight files trained with a horizon input
            (``NetworkConfig.horizon_input``), which then plan the run as a
            learning-rate schedule would, e.g. taking smaller steps near its
            end. ``None``: unknown; such a file then behaves as at the start of
            a long run throughout. Ignored by other files.
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
        fused: bool | str = "auto",
        fused_group_size: int = DEFAULT_FUSED_GROUP_SIZE,
        fused_alone_size: int = ALONE_ROWS,
        network_config: dict | None = None,
        name: str | None = None,
        sparse_updates: str = "rows",
        jit_network: bool | str = "auto",
        total_steps: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        if state_dtype not in ("float32", "bfloat16"):
            raise ValueError(f"state_dtype must be 'float32' or 'bfloat16', got {state_dtype!r}")
        self.state_dtype = state_dtype
        if sparse_updates not in SPARSE_UPDATES:
            raise ValueError(f"sparse_updates must be one of {SPARSE_UPDATES}, got {sparse_updates!r}")
        self.sparse_updates = sparse_updates
        if fused not in (True, False, "auto"):
            raise ValueError(f"fused must be True, False or 'auto', got {fused!r}")
        for option, value in (("fused_group_size", fused_group_size),
                              ("fused_alone_size", fused_alone_size)):
            if int(value) != value or value < 0:
                raise ValueError(f"{option} must be an integer >= 0, got {value!r}")
        self.fused = fused
        if jit_network not in (True, False, "auto"):
            raise ValueError(f"jit_network must be True, False or 'auto', got {jit_network!r}")
        if jit_network is True and keras.backend.backend() != "tensorflow":
            raise ValueError(
                f"jit_network=True compiles the network inside TensorFlow graphs; the "
                f"'{keras.backend.backend()}' backend is not supported (use False or 'auto')"
            )
        self.jit_network = jit_network
        self._compiled_update: CompiledGroupUpdate | None = None  # made at the first step
        self.fused_group_size = int(fused_group_size)
        self.fused_alone_size = int(fused_alone_size)
        self.total_steps = total_steps
        self._load_network(weights, network_config)

    @property
    def total_steps(self) -> int | None:
        """The run's length in steps as stated by the user (``None``: unknown).

        It may be changed at any time (``TotalStepsFromFit`` sets it when ``fit`` starts);
        a horizon-reading optimizer saves it with its variables.
        """
        return self._total_steps

    @total_steps.setter
    def total_steps(self, value: int | None) -> None:
        if value is not None and (isinstance(value, (bool, str)) or int(value) != value
                                  or value < 1):
            raise ValueError(f"total_steps must be a positive integer or None, got {value!r}")
        self._total_steps = None if value is None else int(value)
        if getattr(self, "_horizon_variable", None) is not None:
            self._horizon_variable.assign(float(self._total_steps or 0))

    @property
    def uses_horizon(self) -> bool:
        """Whether the loaded network reads ``total_steps`` (a ``horizon_input`` file)."""
        return self.network_config.horizon_input

    @property
    def horizon(self) -> Any:
        """``total_steps`` as the network's horizon input (0 when unknown): once built, a
        horizon-reading optimizer keeps it in a variable, so a traced step sees changes."""
        if getattr(self, "_horizon_variable", None) is not None:
            return self._horizon_variable
        return float(self._total_steps or 0)

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
            self._horizon_variable = None
            if self.uses_horizon:
                self._horizon_variable = self.add_variable(
                    shape=(), dtype="float32", name="total_steps",
                    initializer=lambda shape, dtype: ops.convert_to_tensor(self.horizon, dtype))
        layout = state_layout(self.network_config)
        self._state_slots = []
        for variable in var_list:
            with self._creation_scope(variable):
                self._state_slots.append(
                    [
                        self.add_variable(
                            shape=(width,) + tuple(variable.shape),
                            dtype=self.state_dtype,
                            name=_slot_name(variable, tag),
                        )
                        for tag, width in layout
                    ]
                )

    def _check_restored(self) -> None:
        if self._awaiting_restore:
            raise RuntimeError(
                f"LearnedOptimizer was re-created from a config whose weight file "
                f"'{self.weights_source}' is not available here, and its saved variables "
                "were never loaded; load the model with keras.models.load_model or load its weights"
            )

    def _under_strategy(self) -> bool:
        """Whether a (non-default) ``tf.distribute`` strategy is in play (TensorFlow only)."""
        if keras.backend.backend() != "tensorflow":
            return False
        import tensorflow as tf

        return tf.distribute.has_strategy() or (
            self._distribution_strategy is not tf.distribute.get_strategy()
        )

    @property
    def uses_fused_path(self) -> bool:
        """Whether updates now go through one network call per group of variables."""
        fused = _FUSED_BY_BACKEND.get(keras.backend.backend(), False) if self.fused == "auto" \
            else self.fused
        # Under a tf.distribute strategy each variable must be updated through
        # `distribution.extended.update`, which runs the update function on
        # every device's copy of that one (mirrored, or parameter-server
        # placed) variable; a concatenation across variables would mix
        # copies living on different devices. So the fused path is used only
        # with the default strategy, and the per-variable path otherwise.
        return bool(fused) and not self._under_strategy()

    @property
    def uses_jit_network(self) -> bool:
        """Whether group updates are now compiled by XLA (see ``jit_network``)."""
        if self.jit_network == "auto":
            return keras.backend.backend() == "tensorflow" and not self._under_strategy()
        return bool(self.jit_network)

    def _backend_update_step(self, grads: list, trainable_variables: list, learning_rate: Any) -> None:
        # Overridden at this level (not `apply`) so that gradient accumulation,
        # clipping, weight decay, EMA and the LossScaleOptimizer, all handled by
        # the base class around this call, work unchanged in both paths.
        if not self.uses_fused_path:
            super()._backend_update_step(grads, trainable_variables, learning_rate)
            return
        self._check_restored()
        if self.sparse_updates == "rows":
            # Sparse gradients take the rows-only path (sparse.py), one variable each.
            sparse = [i for i, g in enumerate(grads) if is_indexed_slices(g)]
            for i in sparse:
                self.update_step(grads[i], trainable_variables[i], learning_rate)
            grads = [g for i, g in enumerate(grads) if i not in sparse]
            trainable_variables = [v for i, v in enumerate(trainable_variables) if i not in sparse]
        sizes = [int(np.prod(v.shape)) for v in trainable_variables]
        groups = plan_groups(sizes, self.fused_group_size, self.fused_alone_size)
        previous_wave: list = []
        for wave in plan_waves([sum(sizes[i] for i in g) for g in groups], self.fused_group_size):
            # Groups within a wave may run concurrently; a wave starts once the
            # previous one is computed, bounding the transient memory.
            with _after(previous_wave):
                previous_wave = [
                    update
                    for k in wave
                    for update in self._update_group(
                        [grads[i] for i in groups[k]],
                        [trainable_variables[i] for i in groups[k]], learning_rate)
                ]

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        self._check_restored()
        if self.sparse_updates == "rows" and is_indexed_slices(gradient):
            slots = self._state_slots[self._get_variable_index(variable)]
            rows_update_step(self, gradient, variable, slots, learning_rate)
            return
        self._update_group([gradient], [variable], learning_rate)

    def _update_group(self, gradients: list, variables: list, learning_rate: Any) -> list:
        """Update ``variables`` and their state slots with one network call.

        Returns the updates (one tensor per variable), for ordering groups.
        """
        slots = [self._state_slots[self._get_variable_index(v)] for v in variables]
        step = self.iterations + 1
        if self.uses_jit_network:
            # Reads, network and writes in one XLA computation (jit_network.py).
            if self._compiled_update is None:
                self._compiled_update = CompiledGroupUpdate(self.network_config)
            return self._compiled_update(self._network_weights, gradients, variables, slots,
                                         step, learning_rate, self.horizon)
        flat_grads, states = read_group(gradients, variables, slots)
        updates, new_states = masked_step(self._network_weights, self.network_config,
                                          flat_grads, states, step, learning_rate,
                                          self.horizon)
        write_group(variables, slots, updates, new_states, self.assign, self.assign_add)
        return updates

    def load_own_variables(self, store: Any) -> None:
        if self.built and len(store.keys()) == len(self.variables):
            store = self._convert_coordinate_major_slots(store)
        super().load_own_variables(store)
        if len(store.keys()) == len(self.variables):
            self._awaiting_restore = False
        if getattr(self, "_horizon_variable", None) is not None:
            restored = int(round(float(ops.convert_to_numpy(self._horizon_variable))))
            self._total_steps = restored or None

    def _convert_coordinate_major_slots(self, store: Any) -> Any:
        """Slots saved by version 0.1 (``variable.shape + (units,)``) in today's layout.

        Version 0.2 stores state feature-major, ``(units,) + variable.shape``.
        A file whose slots have the old shapes is recognised and every slot is
        moved, so older ``.keras`` files keep training where they stopped.
        (A slot whose shape reads the same both ways, e.g. of a 20-unit bias
        for 2x20, cannot tell on its own; one slot that can decides for all.)
        """
        slot_ids = {id(slot) for slots in getattr(self, "_state_slots", []) for slot in slots}
        slots = [(str(i), v) for i, v in enumerate(self.variables) if id(v) in slot_ids]

        def old_shape(variable):
            shape = tuple(variable.shape)
            return shape[1:] + shape[:1]

        saved_old = [tuple(store[key].shape) == old_shape(v) != tuple(v.shape) for key, v in slots]
        if not any(saved_old):
            return store
        converted = {key: store[key] for key in store.keys()}
        for key, variable in slots:
            if tuple(store[key].shape) == old_shape(variable):
                converted[key] = np.moveaxis(np.asarray(store[key]), -1, 0)
        return converted

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "weights": self.weights_source,
                "state_dtype": self.state_dtype,
                "sparse_updates": self.sparse_updates,
                "fused": self.fused,
                "fused_group_size": self.fused_group_size,
                "fused_alone_size": self.fused_alone_size,
                "jit_network": self.jit_network,
                "total_steps": self.total_steps,
                "network_config": self.network_config.to_dict(),
            }
        )
        return config
