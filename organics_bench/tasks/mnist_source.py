"""Where MNIST digits come from: torchvision's MNIST files, or the 5,000 real digits bundled with the package."""
from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import torch
import torchvision

from organics_bench.errors import UserError

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
        raise UserError(f"the MNIST files under {raw} are corrupt or truncated ({type(err).__name__}: {err}); "
                        "delete them and download again") from err
    except OSError as err:
        raise UserError(f"cannot use the data dir {data_dir}: {err.strerror or err}; set paths.data_dir "
                        "(or ORGANICS_BENCH_DATA) to a writable folder") from err
    return train.data, train.targets, test.data, test.targets


def load_bundled_mnist(split_seed: int) -> tuple[torch.Tensor, ...]:
    """The bundled digits split into a 4,000-digit pool and a 1,000-digit test set by `split_seed`."""
    with resources.files("organics_bench.data").joinpath("mnist_5k.npz").open("rb") as handle:
        archive = np.load(handle)
        images, labels = torch.from_numpy(archive["images"]), torch.from_numpy(archive["labels"]).long()
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(split_seed))
    pool, test = order[BUNDLED_TEST_SIZE:], order[:BUNDLED_TEST_SIZE]
    return images[pool], labels[pool], images[test], labels[test]
