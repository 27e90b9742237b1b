"""tf.distribute: MirroredStrategy over two logical CPUs, custom loops, two local workers.

Every scenario runs tests/helpers/distribute_run.py in a fresh interpreter
(logical devices must be set before TensorFlow initializes). TensorFlow only.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "helpers" / "distribute_run.py"


def _env(**extra):
    return dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2",
                PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), **extra)


def _run(mode, weight_file, out, timeout=600):
    result = subprocess.run([sys.executable, str(SCRIPT), mode, str(weight_file), str(out)],
                            capture_output=True, text=True, env=_env(), timeout=timeout)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-6000:]
    return result.stdout


def _load(path):
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def _assert_close(a, b, label):
    """Weights to 1e-6, state to 1e-5 (gradients are all-reduced in another order)."""
    assert sorted(a) == sorted(b)
    for key in a:
        atol = 1e-6 if key.startswith("w") else 1e-5
        np.testing.assert_allclose(a[key], b[key], atol=atol, rtol=0, err_msg=f"{label}: {key}")


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["fit", "loop", "sparse"])
def test_mirrored_matches_one_device(mode, random_weight_file, tmp_path):
    """model.fit (``fit``), a custom loop that builds the optimizer inside
    strategy.run in a tf.function (``loop``, keras-team/keras#23085) and model.fit
    of an Embedding model (``sparse``: all-reduced IndexedSlices, rows-only path)
    give, under MirroredStrategy on two logical CPUs, what one device gives on
    the same global batches; the hidden state is mirrored on both devices."""
    stdout = _run(mode, random_weight_file, tmp_path)
    devices = json.loads(stdout.split("mirrored slot devices")[1].splitlines()[0])
    assert [d[-5:] for d in devices] == ["CPU:0", "CPU:1"], devices
    single, mirrored = _load(tmp_path / f"{mode}_single.npz"), _load(tmp_path / f"{mode}_mirrored.npz")
    _assert_close(single, mirrored, mode)
    initial = np.random.default_rng(1).normal(0, 0.5, single["w0"].shape)
    assert not np.allclose(single["w0"], initial, atol=1e-5)  # it did train
    if mode == "sparse":  # embedding rows 25.. are never looked up: untouched, state zero
        np.testing.assert_array_equal(mirrored["w0"][25:], initial[25:].astype("float32"))
        assert not mirrored["s0"][25:].any() and mirrored["s0"][:25].any()


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@pytest.mark.slow
def test_multi_worker_mirrored_two_local_workers_agree(random_weight_file, tmp_path):
    """Two worker processes on loopback (TF_CONFIG, free ports) train the same
    model with model.fit and with a custom loop and end bit-identical.

    model.fit needs two small workarounds for keras-team/keras#20585 (Keras's
    own reductions, not the optimizer; see distribute_run.work_around_keras_20585).
    """
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    processes = []
    for index in range(2):
        tf_config = json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})
        processes.append(subprocess.Popen(
            [sys.executable, str(SCRIPT), "worker", str(random_weight_file), str(tmp_path)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(TF_CONFIG=tf_config)))
    outputs = []
    try:
        for process in processes:
            outputs.append(process.communicate(timeout=600))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()
    for process, (stdout, stderr) in zip(processes, outputs):
        assert process.returncode == 0, stdout[-2000:] + stderr[-6000:]
    for run in ("worker", "worker_loop"):  # model.fit, then a custom loop
        first, second = _load(tmp_path / f"{run}_0.npz"), _load(tmp_path / f"{run}_1.npz")
        for key in first:
            np.testing.assert_array_equal(first[key], second[key], err_msg=f"{run}: {key}")
        assert np.abs(first["s0"]).sum() > 0 and all(np.isfinite(v).all() for v in first.values())
    assert int(_load(tmp_path / "worker_0.npz")["replicas"]) == 2


@pytest.mark.slow
def test_meta_trainer_spreads_lanes_over_replicas(tmp_path):
    """MetaTrainer(strategy=MirroredStrategy over two logical CPUs), 2 lanes: each
    replica runs one lane, the meta-gradients are all-reduced, and the network
    and Adam state end as on one device running both lanes."""
    stdout = _run("meta", "-", tmp_path)
    devices = json.loads(stdout.split("replica state devices")[1].splitlines()[0])
    assert [d[-5:] for d in devices] == ["CPU:0", "CPU:1"], devices
    single, mirrored = _load(tmp_path / "meta_single.npz"), _load(tmp_path / "meta_mirrored.npz")
    coordinates = mirrored.pop("state_coordinates")
    assert list(coordinates) == [10, 10]  # one lane of the 10-parameter quadratic on each replica
    assert sorted(single) == sorted(mirrored)
    for key in single:
        np.testing.assert_allclose(single[key], mirrored[key], atol=1e-6, rtol=1e-5, err_msg=key)
    from keras_learned_opt.network import NetworkConfig, initial_weights

    start = initial_weights(NetworkConfig(hidden_sizes=(8, 8)), seed=5)
    assert not np.allclose(single["weights/output/kernel"], start["output/kernel"])  # it trained


def _meta_train_workers(args, tmp_path, out_name, workers=2):
    """Run the meta-train CLI as ``workers`` local processes of one
    MultiWorkerMirroredStrategy cluster (TF_CONFIG, free loopback ports)."""
    addresses = [f"127.0.0.1:{port}" for port in _free_ports(workers)]
    command = [sys.executable, "-m", "keras_learned_opt.meta_train", *args, "--multi-worker",
               "--out", str(tmp_path / out_name)]
    processes = []
    for index in range(workers):
        tf_config = json.dumps({"cluster": {"worker": addresses},
                                "task": {"type": "worker", "index": index}})
        processes.append(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          text=True, env=_env(TF_CONFIG=tf_config)))
    outputs = []
    try:
        for process in processes:
            outputs.append(process.communicate(timeout=600))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()
    for process, (stdout, stderr) in zip(processes, outputs):
        assert process.returncode == 0, stdout[-2000:] + stderr[-6000:]
    return [stdout for stdout, _ in outputs]


@pytest.mark.slow
def test_meta_train_cli_over_two_local_workers(tmp_path):
    """``meta_train --multi-worker`` as two processes (one lane each): the chief
    alone writes the output and checkpoint, the meta-optimizer state equals a
    one-process run of both lanes, and a longer rerun resumes on both workers."""
    args = ["--problem", "quadratic", "--hidden", "8", "8", "--steps", "20", "--unroll", "10",
            "--lanes", "2", "--validate-every", "2", "--validation-seeds", "2", "--meta-lr", "0.01",
            "--seed", "5", "--threads", "1", "--quiet"]
    for episodes in (2, 3):  # 3: both workers resume from the chief's checkpoint at episode 2
        stdouts = _meta_train_workers([*args, "--episodes", str(episodes)], tmp_path, "mw.h5")
        assert "the chief wrote" in stdouts[1] and "wrote" in stdouts[0]
        single = subprocess.run(
            [sys.executable, "-m", "keras_learned_opt.meta_train", *args, "--episodes", str(episodes),
             "--out", str(tmp_path / "single.h5")],
            capture_output=True, text=True, env=_env(), timeout=600)
        assert single.returncode == 0, single.stderr[-4000:]
        workers, alone = _load(tmp_path / "mw.h5.ckpt.npz"), _load(tmp_path / "single.h5.ckpt.npz")
        meta = [json.loads(bytes(d.pop("meta_json")).decode()) for d in (workers, alone)]
        assert meta[0]["episode"] == meta[1]["episode"] == episodes
        assert sorted(workers) == sorted(alone)
        for key in workers:
            np.testing.assert_allclose(workers[key], alone[key], atol=1e-6, rtol=1e-5, err_msg=key)
    # Only the chief wrote: the output, its checkpoint, and no stray temporary files.
    assert sorted(p.name for p in tmp_path.glob("mw.h5*")) == ["mw.h5", "mw.h5.ckpt.npz"]
    assert not list(tmp_path.glob(".mw.h5*"))
