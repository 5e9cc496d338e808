"""CIFAR-10 from torchvision's on-disk batches (`cifar-10-batches-py/`), downloaded when allowed."""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision

from organics_bench.errors import UserError

CIFAR_FILES = (
    "data_batch_1",
    "data_batch_2",
    "data_batch_3",
    "data_batch_4",
    "data_batch_5",
    "test_batch",
    "batches.meta",
)


class _PresentCIFAR10(torchvision.datasets.CIFAR10):
    """torchvision's CIFAR-10 reader, asking only that the batch files exist: their md5 sums are verified by
    torchvision when it downloads them, and our own shape checks catch damaged files."""

    def _check_integrity(self) -> bool:
        folder = Path(self.root) / self.base_folder
        return all((folder / name).is_file() for name, _ in self.train_list + self.test_list)

    def _load_meta(self) -> None:
        """The class names are not needed; only require the metadata file to be there."""
        if not (Path(self.root) / self.base_folder / self.meta["filename"]).is_file():
            raise RuntimeError("Dataset metadata file not found")


def load_torchvision_cifar10(data_dir: str | Path, download: bool) -> tuple[torch.Tensor, ...]:
    """(train images, train labels, test images, test labels): uint8 (N, 3, 32, 32) and int64 (N,)."""
    folder = Path(data_dir) / "cifar-10-batches-py"
    try:
        if download and not folder.is_dir():
            torchvision.datasets.CIFAR10(str(data_dir), train=True, download=True)
        train = _PresentCIFAR10(str(data_dir), train=True)
        test = _PresentCIFAR10(str(data_dir), train=False)
    except RuntimeError as err:
        how = "download failed (no network?)" if download else "download is off (task.download=false)"
        raise UserError(
            f"CIFAR-10 not found under {folder} and {how}: put {', '.join(CIFAR_FILES)} there "
            "(torchvision's cifar-10-batches-py), or point ORGANICS_BENCH_DATA (paths.data_dir) at "
            "their parent folder"
        ) from err
    except OSError as err:
        raise UserError(
            f"cannot use the data dir {data_dir}: {err.strerror or err}; set paths.data_dir "
            "(or ORGANICS_BENCH_DATA) to a writable folder"
        ) from err
    except Exception as err:  # unpickling a damaged batch raises many types
        raise UserError(
            f"the CIFAR-10 files under {folder} are corrupt or truncated ({type(err).__name__}); "
            "delete them and download again"
        ) from err
    images = [torch.from_numpy(d.data).permute(0, 3, 1, 2).contiguous() for d in (train, test)]
    labels = [torch.tensor(d.targets, dtype=torch.long) for d in (train, test)]
    for part, x, y in (("train", images[0], labels[0]), ("test", images[1], labels[1])):
        if x.shape[1:] != (3, 32, 32) or len(x) != len(y) or (len(y) and (y.min() < 0 or y.max() > 9)):
            raise UserError(
                f"the CIFAR-10 {part} files under {folder} are inconsistent (images {tuple(x.shape)}, "
                f"{len(y)} labels); delete them and download again"
            )
    return images[0], labels[0], images[1], labels[1]
