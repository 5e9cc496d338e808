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
