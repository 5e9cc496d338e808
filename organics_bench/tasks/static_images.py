"""Static image classification: MNIST (paper Table 1) and CIFAR-10 (our extension; the paper has no CIFAR)."""

from __future__ import annotations

import torch

from organics_bench.errors import UserError
from organics_bench.tasks.base import TaskData, TaskSpec, task_data
from organics_bench.tasks.cifar_source import load_torchvision_cifar10
from organics_bench.tasks.mnist_source import check_source, load_mnist

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)  # per-channel statistics of the CIFAR-10 training set
CIFAR_STD = (0.2470, 0.2435, 0.2616)


class StaticMNIST:
    """MNIST images (batch, 1, 28, 28) in [0, 1], no normalisation; the same 57,000 / 3,000 split (seed 73) as
    the sequential tasks and the official 10k test set (or the bundled digits)."""

    def __init__(
        self,
        name: str,
        source: str = "torchvision",
        data_dir: str = "data",
        download: bool = True,
        split_seed: int = 73,
        val_size: int | None = None,
    ) -> None:
        self.val_size = check_source(source, val_size)
        self.name, self.source, self.data_dir, self.download, self.split_seed = (
            name,
            source,
            data_dir,
            download,
            split_seed,
        )

    @property
    def spec(self) -> TaskSpec:
        return TaskSpec(self.name, "static", d_input=784, n_classes=10, input_shape=(1, 28, 28))

    def load(self) -> TaskData:
        pool_x, pool_y, test_x, test_y = load_mnist(
            self.source, self.data_dir, self.download, self.split_seed, self.val_size
        )
        return task_data(
            _unit_interval(pool_x),
            pool_y.long(),
            _unit_interval(test_x),
            test_y.long(),
            self.val_size,
            self.split_seed,
            {"source": self.source, "split_seed": self.split_seed},
        )


class StaticCIFAR10:
    """CIFAR-10 images (batch, 3, 32, 32) standardised per channel with the training-set statistics; 45,000 /
    5,000 train/val split from `split_seed`, official 10k test set. No augmentation (a fixed-input benchmark)."""

    def __init__(
        self, name: str, data_dir: str = "data", download: bool = True, split_seed: int = 73, val_size: int = 5000
    ) -> None:
        if val_size <= 0:
            raise UserError(f"task.val_size must be positive, got {val_size}")
        self.name, self.data_dir, self.download, self.split_seed, self.val_size = (
            name,
            data_dir,
            download,
            split_seed,
            val_size,
        )

    @property
    def spec(self) -> TaskSpec:
        return TaskSpec(self.name, "static", d_input=3072, n_classes=10, input_shape=(3, 32, 32))

    def load(self) -> TaskData:
        pool_x, pool_y, test_x, test_y = load_torchvision_cifar10(self.data_dir, self.download)
        if self.val_size >= len(pool_y):
            raise UserError(f"task.val_size={self.val_size} leaves no training images out of {len(pool_y)}")
        record = {"source": "torchvision", "split_seed": self.split_seed, "normalisation": "per-channel mean/std"}
        return task_data(
            _standardised(pool_x), pool_y, _standardised(test_x), test_y, self.val_size, self.split_seed, record
        )


def _unit_interval(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 28, 28) -> float (N, 1, 28, 28) in [0, 1]."""
    return images.float().div_(255.0).unsqueeze(1)


def _standardised(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 3, 32, 32) -> float, per-channel (x / 255 - mean) / std with the CIFAR-10 training statistics."""
    mean, std = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1), torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
    return (images.float() / 255.0 - mean) / std
