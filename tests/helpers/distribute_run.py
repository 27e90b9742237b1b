"""tf.distribute scenarios for tests/test_distribute.py, one per subprocess.

Logical devices must be configured before TensorFlow initializes its runtime,
and MultiWorkerMirroredStrategy must be created at program start, so each
scenario runs in a fresh interpreter::

    python tests/helpers/distribute_run.py MODE WEIGHT_FILE OUT_DIR

MODE is ``fit`` (model.fit on one device and under MirroredStrategy over two
logical CPUs), ``sparse`` (the same for an Embedding model), ``loop`` (a custom training loop, optimizer built inside
``strategy.run`` in a tf.function, on one device and mirrored), ``worker``
(model.fit, then the custom loop, under MultiWorkerMirroredStrategy; TF_CONFIG
names the worker) or
``meta`` (the meta-trainer with and without a strategy). Results go to
``OUT_DIR/<MODE>[_<worker index>].npz``.
"""

from __future__ import annotations

import json
import os
import sys

os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tiny_model import tiny_classifier  # noqa: E402  (tests/helpers is sys.path[0])

GLOBAL_BATCH = 32
STEPS = 4


def split_cpu(n: int = 2) -> list[str]:
    """Make ``n`` logical CPU devices (before anything initializes the runtime)."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n)
    return [d.name for d in tf.config.list_logical_devices("CPU")]


def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(GLOBAL_BATCH * STEPS, 8)).astype("float32")
    y = rng.integers(0, 3, size=(GLOBAL_BATCH * STEPS,)).astype("int32")
    return x, y


def build_model(weight_file: str):
    import keras_learned_opt as klo

    return tiny_classifier(), klo.LearnedOptimizer(weight_file, learning_rate=0.01)


def result(model, optimizer) -> dict[str, np.ndarray]:
    arrays = {f"w{i}": np.asarray(w) for i, w in enumerate(model.weights)}
    arrays.update({f"s{i}": np.asarray(s) for i, s in enumerate(optimizer._state_slots[0])})
    return arrays


def component_devices(variable) -> list[str]:
    """Devices holding the copies of a (possibly mirrored) variable."""
    value = variable.value
    return sorted(v.device for v in getattr(value, "values", [value]))


def run_fit(weight_file: str, strategy) -> tuple[dict, list[str]]:
    import keras

    with strategy.scope():
        model, optimizer = build_model(weight_file)
        model.compile(optimizer=optimizer,
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    # A tf.data.Dataset of global batches: Keras 3.15 cannot fit numpy arrays under
    # MultiWorkerMirroredStrategy (its symbolic build reduces a PerReplica of numpy
    # arrays), and for the other strategies it is the same data.
    dataset = tf.data.Dataset.from_tensor_slices(data()).batch(GLOBAL_BATCH)
    model.fit(dataset, epochs=2, shuffle=False, verbose=0)
    return result(model, optimizer), component_devices(optimizer._state_slots[0][0])


def run_sparse(weight_file: str, strategy) -> tuple[dict, list[str]]:
    """model.fit of an Embedding model: IndexedSlices gradients take the rows-only path."""
    import keras

    import keras_learned_opt as klo

    with strategy.scope():
        model = keras.Sequential([
            keras.Input((6,), dtype="int32"),
            keras.layers.Embedding(50, 4, name="embed"),
            keras.layers.GlobalAveragePooling1D(),
            keras.layers.Dense(1, name="head"),
        ])
        rng = np.random.default_rng(1)
        model.set_weights([rng.normal(0, 0.5, tuple(w.shape)).astype("float32")
                           for w in model.weights])
        optimizer = klo.LearnedOptimizer(weight_file, learning_rate=0.01)
        model.compile(optimizer=optimizer, loss="mse")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 25, size=(GLOBAL_BATCH * STEPS, 6)).astype("int32")  # rows 25.. unused
    y = rng.normal(size=(GLOBAL_BATCH * STEPS, 1)).astype("float32")
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(GLOBAL_BATCH)
    model.fit(dataset, epochs=2, shuffle=False, verbose=0)
    return result(model, optimizer), component_devices(optimizer._state_slots[0][0])


def run_loop(weight_file: str, strategy) -> tuple[dict, list[str]]:
    """A custom loop: the optimizer is first built inside strategy.run in a tf.function."""
    import keras

    with strategy.scope():
        model, optimizer = build_model(weight_file)
    x, y = data()
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(GLOBAL_BATCH)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)

    @tf.function
    def train_step(batch):
        def replica_step(xb, yb):
            with tf.GradientTape() as tape:
                per_example = loss_fn(yb, model(xb, training=True))
                loss = tf.nn.compute_average_loss(per_example, global_batch_size=GLOBAL_BATCH)
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply(grads, model.trainable_variables)
            return loss

        return strategy.reduce("SUM", strategy.run(replica_step, args=batch), axis=None)

    for _ in range(2):
        for batch in strategy.experimental_distribute_dataset(dataset):
            train_step(batch)
    return result(model, optimizer), component_devices(optimizer._state_slots[0][0])


def run_meta(out_dir: str, strategy) -> dict:
    from keras_learned_opt.meta_train import MetaTrainConfig, MetaTrainer

    config = MetaTrainConfig(problems=("quadratic",), network={"hidden_sizes": [8, 8]},
                             episodes=2, steps=20, unroll=10, lanes=2, validate_every=2,
                             validation_seeds=2, meta_learning_rate=0.01, seed=5)
    name = "mirrored" if strategy is not None else "single"
    trainer = MetaTrainer(config, os.path.join(out_dir, f"{name}.h5"), verbose=0, strategy=strategy)
    trainer.train()
    arrays = {f"weights/{n}": v.numpy() for n, v in trainer.weights.items()}
    arrays.update({f"adam/{i}": np.asarray(v) for i, v in enumerate(trainer.meta_optimizer.variables)})
    arrays["coordinate_steps"] = np.array(trainer.coordinate_steps)
    if strategy is not None:  # where the lanes' LSTM state lives: coordinates and device per replica
        state = trainer.train_unrollers[(0, config.unroll)].initial_state()[0]
        local = strategy.experimental_local_results(state)
        arrays["state_coordinates"] = np.array([int(s.shape[1]) for s in local])  # [width, N]
        print("replica state devices", json.dumps([s.device for s in local]))
    return arrays


def work_around_keras_20585() -> None:
    """Let model.fit run under MultiWorkerMirroredStrategy (keras-team/keras#20585).

    Keras 3.15 fails there for every optimizer, twice, outside the optimizer:
    1. fit reduces the first (x, y) batch with ``strategy.reduce`` only to learn
       its shapes, and MultiWorkerMirroredStrategy cannot reduce a tuple; the
       local replica's batch has the same shapes.
    2. the scalar logs (loss) are reduced with ``axis=0``, which a scalar does
       not have; ``axis=None`` averages them over the replicas.
    Gradients, variables and the optimizer are not touched.
    """
    from keras.src.backend.tensorflow import trainer

    original_reduce = trainer.reduce_per_replica

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and trainer._collective_all_reduce_multi_worker(strategy):
            def mean(v):
                rank = strategy.experimental_local_results(v)[0].shape.rank
                return strategy.reduce("MEAN", v, axis=None if rank == 0 else 0)

            return tf.nest.map_structure(mean, values)
        return original_reduce(values, strategy, reduction)

    trainer.reduce_per_replica = reduce_per_replica

    original = trainer.TensorFlowTrainer._maybe_symbolic_build

    def symbolic_build(self, iterator=None, data_batch=None):
        if iterator is not None and data_batch is None:
            for _, _, batches in iterator:
                data_batch = tf.nest.map_structure(
                    lambda v: self.distribute_strategy.experimental_local_results(v)[0], next(batches))
                break
            iterator = None
        return original(self, iterator=iterator, data_batch=data_batch)

    trainer.TensorFlowTrainer._maybe_symbolic_build = symbolic_build


def main() -> None:
    mode, weight_file, out_dir = sys.argv[1:4]
    if mode == "worker":
        # MultiWorkerMirroredStrategy must come first: it starts the gRPC server.
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
        work_around_keras_20585()
        arrays, devices = run_fit(weight_file, strategy)
        arrays["replicas"] = np.array(strategy.num_replicas_in_sync)
        np.savez(os.path.join(out_dir, f"worker_{index}.npz"), **arrays)
        loop_arrays, _ = run_loop(weight_file, strategy)
        np.savez(os.path.join(out_dir, f"worker_loop_{index}.npz"), **loop_arrays)
        print("worker", index, "done on", devices)
        return
    devices = split_cpu(2)
    mirrored = tf.distribute.MirroredStrategy(devices)
    if mode == "meta":
        for strategy in (None, mirrored):
            arrays = run_meta(out_dir, strategy)
            name = "single" if strategy is None else "mirrored"
            np.savez(os.path.join(out_dir, f"meta_{name}.npz"), **arrays)
        print("meta done")
        return
    run = {"fit": run_fit, "loop": run_loop, "sparse": run_sparse}[mode]
    for name, strategy in (("single", tf.distribute.get_strategy()), ("mirrored", mirrored)):
        arrays, slot_devices = run(weight_file, strategy)
        np.savez(os.path.join(out_dir, f"{mode}_{name}.npz"), **arrays)
        print(name, "slot devices", json.dumps(slot_devices))


if __name__ == "__main__":
    main()
