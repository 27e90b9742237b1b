"""Meta-training data-parallel over the replicas of a ``tf.distribute`` strategy.

``ReplicatedUnroller`` has the interface of ``unroll.Unroller`` that
``MetaTrainer`` uses (``episodes``, ``initial_state``, ``train_truncation``,
``lanes``, ``coordinates``) but splits the ``lanes`` episodes evenly over the
replicas: replica ``r`` runs lanes ``r*k .. r*k + k - 1`` (``k = lanes /
replicas``) with its own ``Unroller`` and keeps their optimizee parameters and
LSTM state on its device between truncations. Only the meta-loss and the
meta-gradients cross devices: each replica's are the mean over its lanes, and
their mean over replicas (an all-reduce) is exactly the mean over all lanes
that one device computes, so the meta-optimizer step is the same.

Shapes: as in ``unroll``, but per replica: ``params`` is a list over its ``k``
lanes, ``state`` tensors are ``[width, k * N]``, ``task`` arrays ``[k, ...]``,
truncation batches ``[k, unroll, ...]``. Returned ``losses`` are gathered to
``[unroll, lanes]`` in lane order.

Works with ``tf.distribute.MirroredStrategy`` (local devices, including
logical ones) and ``tf.distribute.MultiWorkerMirroredStrategy`` (one process
per machine, ``TF_CONFIG``); every worker builds the episodes of all lanes from
the same seeds and keeps only its replicas' lanes. ``MetaTrainer`` writes the
checkpoint and output files from the chief worker only.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import tensorflow as tf

from keras_learned_opt.network import NetworkConfig
from keras_learned_opt.problems import Problem
from keras_learned_opt.unroll import Unroller


class ReplicatedUnroller:
    """``lanes`` episodes of one problem, ``lanes / replicas`` on each replica of ``strategy``."""

    def __init__(self, problem: Problem, config: NetworkConfig, unroll: int, lanes: int = 1,
                 meta_loss: str = "mean", loss_weighting: str = "uniform",
                 second_order: bool = False, *, strategy: tf.distribute.Strategy) -> None:
        replicas = strategy.num_replicas_in_sync
        if lanes % replicas:
            raise ValueError(f"lanes ({lanes}) must be a multiple of the strategy's "
                             f"{replicas} replicas")
        self.strategy = strategy
        self.problem = problem
        self.unroll = unroll
        self.lanes = lanes
        self.lanes_per_replica = lanes // replicas
        # Builds the episodes of all lanes (same seeds, same data as one device).
        self._all_lanes = Unroller(problem, config, unroll, lanes, meta_loss, loss_weighting)
        self._replica = Unroller(problem, config, unroll, self.lanes_per_replica, meta_loss,
                                 loss_weighting, second_order)
        self.coordinates = self._all_lanes.coordinates
        self._train = tf.function(self._train_truncation, reduce_retracing=True)

    def _per_replica(self, value_fn: Callable[[int], Any]) -> Any:
        """A (nest of) per-replica value(s): ``value_fn(replica_id)`` on each replica's device."""
        devices = self.strategy.extended.worker_devices  # this worker's replicas only

        def on_device(context):
            replica = context.replica_id_in_sync_group  # global: worker * local + local
            # MirroredStrategy calls value_fn without a device scope: copy explicitly.
            with tf.device(devices[replica % len(devices)]):
                return tf.nest.map_structure(tf.identity, value_fn(replica))

        return self.strategy.experimental_distribute_values_from_function(on_device)

    def _lanes_of(self, replica: int) -> slice:
        return slice(replica * self.lanes_per_replica, (replica + 1) * self.lanes_per_replica)

    def initial_state(self) -> Any:
        return self._per_replica(lambda r: self._replica.initial_state())

    def episodes(self, seeds: Sequence[int], steps: int) -> tuple[Any, Any, list[np.ndarray]]:
        """Per-replica params and task; batches stay ``[lanes, steps, ...]`` numpy arrays."""
        params, task, batches = self._all_lanes.episodes(seeds, steps)
        params = self._per_replica(lambda r: [list(lane) for lane in params[self._lanes_of(r)]])
        task = self._per_replica(lambda r: [t[self._lanes_of(r)] for t in task])
        return params, task, batches

    def _train_truncation(self, weights, params, state, task, batches, step0, horizon):
        meta_loss, grads, params, state, losses = self.strategy.run(
            self._replica._train_truncation,
            args=(weights, params, state, task, batches, step0, horizon),
        )
        mean = tf.distribute.ReduceOp.MEAN
        meta_loss = self.strategy.reduce(mean, meta_loss, axis=None)
        grads = {n: self.strategy.reduce(mean, g, axis=None) for n, g in grads.items()}
        losses = self.strategy.gather(losses, axis=1)
        return meta_loss, grads, params, state, losses

    def train_truncation(self, weights: dict, params, state, task, batches, step0: int,
                         horizon: int = 0):
        """One truncation on every replica: (meta_loss, grads, params, state, losses).

        ``meta_loss`` and ``grads`` are all-reduced means (plain tensors);
        ``params`` and ``state`` stay per replica for the next truncation.
        """
        batches = self._per_replica(lambda r: [b[self._lanes_of(r)] for b in batches])
        return self._train(weights, params, state, task, batches, tf.constant(step0, tf.int32),
                           tf.constant(horizon, tf.float32))
