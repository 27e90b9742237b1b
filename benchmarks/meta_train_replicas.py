"""Meta-training throughput on one device vs MirroredStrategy over logical CPU devices.

    python benchmarks/meta_train_replicas.py --replicas 2 --lanes 8 --episodes 4

Splits the CPU into ``--replicas`` logical devices (before TensorFlow starts),
then times the same meta-training run (fmnist_mlp by default) without and with
the strategy, and prints optimizee coordinate-steps per second. On CPUs the
logical devices share the same cores, so this measures the overhead of the
replicated path rather than a speed-up; on several GPUs use
``python -m keras_learned_opt.meta_train --mirrored``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["KERAS_BACKEND"] = "tensorflow"

import tensorflow as tf  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--lanes", type=int, default=8)
    parser.add_argument("--episodes", type=int, default=4)
    parser.add_argument("--problem", default="quadratic")
    args = parser.parse_args()
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * args.replicas)
    devices = [d.name for d in tf.config.list_logical_devices("CPU")]

    from keras_learned_opt.meta_train import MetaTrainConfig, MetaTrainer

    config = MetaTrainConfig(problems=(args.problem,), episodes=args.episodes, lanes=args.lanes,
                             validate_every=10**6, checkpoint_every=10**6, validation_seeds=1)
    for name, strategy in (("one device", None),
                           (f"mirrored x{args.replicas}", tf.distribute.MirroredStrategy(devices))):
        with tempfile.TemporaryDirectory() as directory:
            trainer = MetaTrainer(config, os.path.join(directory, "w.h5"), verbose=0,
                                  strategy=strategy)
            trainer._run_episode(0)  # trace
            tic = time.perf_counter()
            steps0 = trainer.coordinate_steps
            for episode in range(1, args.episodes + 1):
                trainer._run_episode(episode)
            seconds = time.perf_counter() - tic
        rate = (trainer.coordinate_steps - steps0) / seconds
        print(f"{name:>12}: {rate / 1e6:.3f} M coordinate-steps/s ({seconds:.1f} s)")


if __name__ == "__main__":
    main()
