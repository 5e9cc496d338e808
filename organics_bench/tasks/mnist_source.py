"""Where MNIST digits come from: torchvision's MNIST files, or the 5,000 real digits bundled with the package."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import torch
import torchvision

from organics_bench.errors import UserError

SOURCES = ("torchvision", "bundled")
DEFAULT_VAL_SIZE = {"torchvision": 3000, "bundled": 500}
MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
BUNDLED_TEST_SIZE = 1000


def load_torchvision_mnist(data_dir: str | Path, download: bool) -> tuple[torch.Tensor, ...]:
    """(train images, train labels, test images, test labels) as uint8 (N, 28, 28) and int64 (N,) tensors."""
    raw = Path(data_dir) / "MNIST" / "raw"
    try:
        train = torchvision.datasets.MNIST(str(data_dir), train=True, download=download)
        test = torchvision.datasets.MNIST(str(data_dir), train=False, download=download)
    except RuntimeError as err:
        if "not found" in str(err) or "Error downloading" in str(err):
            how = "download failed (no network?)" if download else "download is off (task.download=false)"
            raise UserError(
                f"MNIST not found under {raw} and {how}: put {', '.join(MNIST_FILES)} (or their .gz files) there, "
                "point ORGANICS_BENCH_DATA (paths.data_dir) at their root, or use task.source=bundled"
            ) from err
        raise UserError(f"could not read the MNIST files under {raw} ({err}); delete them and download again") from err
    except (AssertionError, ValueError, TypeError, KeyError, IndexError) as err:
        raise UserError(
            f"the MNIST files under {raw} are corrupt or truncated ({type(err).__name__}: {err}); "
            "delete them and download again"
        ) from err
    except OSError as err:
        raise UserError(
            f"cannot use the data dir {data_dir}: {err.strerror or err}; set paths.data_dir "
            "(or ORGANICS_BENCH_DATA) to a writable folder"
        ) from err
    for part, split in (("training", train), ("test", test)):
        if len(split.data) != len(split.targets):
            raise UserError(
                f"the MNIST {part} files under {raw} disagree: {len(split.data)} images but "
                f"{len(split.targets)} labels; delete them and download again (organics-bench-data mnist)"
            )
    return train.data, train.targets, test.data, test.targets


def load_bundled_mnist(split_seed: int) -> tuple[torch.Tensor, ...]:
    """The bundled digits split into a 4,000-digit pool and a 1,000-digit test set by `split_seed`."""
    with resources.files("organics_bench.data").joinpath("mnist_5k.npz").open("rb") as handle:
        archive = np.load(handle)
        images, labels = torch.from_numpy(archive["images"]), torch.from_numpy(archive["labels"]).long()
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(split_seed))
    pool, test = order[BUNDLED_TEST_SIZE:], order[:BUNDLED_TEST_SIZE]
    return images[pool], labels[pool], images[test], labels[test]


def load_mnist(
    source: str, data_dir: str | Path, download: bool, split_seed: int, val_size: int
) -> tuple[torch.Tensor, ...]:
    """(pool images, pool labels, test images, test labels) from either source, after checking `val_size` fits."""
    if source == "bundled":
        digits = load_bundled_mnist(split_seed)
    else:
        digits = load_torchvision_mnist(data_dir, download)
    if val_size >= len(digits[1]):
        raise UserError(f"task.val_size={val_size} leaves no training digits out of {len(digits[1])}")
    return digits


def check_source(source: str, val_size: int | None) -> int:
    """Validate `task.source` and return the validation size (the source's default when `val_size` is null)."""
    if source not in SOURCES:
        raise UserError(f"task.source must be one of {', '.join(SOURCES)}, got {source!r}")
    if val_size is not None and val_size <= 0:
        raise UserError(f"task.val_size must be positive (or null for the source's default), got {val_size}")
    return DEFAULT_VAL_SIZE[source] if val_size is None else val_size
