"""Test helpers: run the installed console script, and write MNIST files in torchvision's real on-disk format."""
from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np

SCRIPT = Path(sys.executable).parent / "organics-bench"


def run_cli(*args: str, cwd: Path, timeout: int = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `organics-bench ARGS` as a user would, with wandb off unless the caller says otherwise."""
    full_env = {**os.environ, "WANDB_MODE": "disabled", "TQDM_DISABLE": "1", "HYDRA_FULL_ERROR": "0",
                **(env or {})}
    return subprocess.run([str(SCRIPT), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=full_env)


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array in the IDX ("Pascal Vincent") format that MNIST's files use."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def write_fake_mnist(root: Path, n_train: int = 120, n_test: int = 40, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Random 28x28 digits under root/MNIST/raw in the four files torchvision's MNIST reads."""
    rng = np.random.default_rng(seed)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    arrays = (rng.integers(0, 256, (n_train, 28, 28)), rng.integers(0, 10, n_train),
              rng.integers(0, 256, (n_test, 28, 28)), rng.integers(0, 10, n_test))
    names = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    for name, array in zip(names, arrays):
        write_idx(raw / name, array.astype(np.uint8))
    return tuple(a.astype(np.uint8) for a in arrays)


def read_metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def write_fake_cifar10(root: Path, n_train_per_batch: int = 20, n_test: int = 30, seed: int = 0) -> None:
    """Random images under root/cifar-10-batches-py in the pickled batch format torchvision's CIFAR10 reads
    (protocol-2 pickles of dicts with "data" uint8 (N, 3072) and "labels", as the official files hold)."""
    import pickle

    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    batches = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in batches:
        count = n_test if name == "test_batch" else n_train_per_batch
        payload = {"batch_label": name, "data": rng.integers(0, 256, (count, 3072), dtype=np.uint8),
                   "labels": rng.integers(0, 10, count).tolist()}
        (folder / name).write_bytes(pickle.dumps(payload, protocol=2))
    meta = {"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                            "truck"], "num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))


def smoke_overrides(model: str, task: str, data_dir: Path) -> list[str]:
    """`debug=smoke model=M task=T` plus what makes it tiny and offline: small models, bundled digits, fake CIFAR."""
    return ["debug=smoke", f"model={model}", f"task={task}", *smoke_data_overrides(model, task, data_dir)]


def smoke_data_overrides(model: str, task: str, data_dir: Path) -> list[str]:
    """The size and data overrides of `smoke_overrides`, for runs that choose model and task another way."""
    overrides = [f"paths.data_dir={data_dir}"]
    if model_takes(model, "hidden_size"):
        overrides.append("model.hidden_size=8")
    if task in ("smnist", "psmnist", "mnist"):
        overrides += ["task.source=bundled", "task.download=false"]
    if task in ("smnist", "psmnist"):
        overrides.append("task.image_size=14")
    if task == "cifar10":
        write_fake_cifar10(data_dir)
        overrides += ["task.download=false", "task.val_size=20"]
    if task == "parity":
        overrides += ["task.n_train=64", "task.n_val=32", "task.n_test=32", "task.test_lengths=[8,40,64]"]
    return overrides


def model_takes(model: str, key: str) -> bool:
    """Whether the model config (or the config it extends) sets `key`."""
    from importlib import resources

    from omegaconf import OmegaConf

    folder = resources.files("organics_bench.conf").joinpath("model")
    cfg = OmegaConf.create(folder.joinpath(f"{model}.yaml").read_text())
    parents = [d for d in cfg.get("defaults", []) if d != "_self_"]
    return key in cfg or any(model_takes(parent, key) for parent in parents)


def composed_config(overrides: list[str]):
    """The composed config with its hydra node, and HydraConfig set so that ${hydra:...} resolves."""
    from hydra import compose, initialize_config_module
    from hydra.core.hydra_config import HydraConfig

    with initialize_config_module("organics_bench.conf", version_base="1.3"):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        return cfg


def composed(overrides: list[str]):
    """The resolved job config (without the hydra node) and the chosen model's name."""
    from omegaconf import OmegaConf

    from organics_bench.training.records import job_config

    cfg = composed_config(overrides)
    return OmegaConf.create(job_config(cfg)), cfg.hydra.runtime.choices.model
