"""Sequential MNIST (sMNIST) and permuted sequential MNIST (psMNIST), paper protocol of SPEC.md section 2."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from organics_bench.errors import UserError
from organics_bench.tasks.base import Split, TaskData, TaskSpec
from organics_bench.tasks.mnist_source import load_bundled_mnist, load_torchvision_mnist

SOURCES = ("torchvision", "bundled")
LAYOUTS = ("pixels", "rows")
DEFAULT_VAL_SIZE = {"torchvision": 3000, "bundled": 500}


class SequentialMNIST:
    """MNIST digits fed as a sequence: one pixel per step ("pixels", 784 x 1) or one row per step ("rows", 28 x 28).

    Pixels are in [0, 1] with no normalisation. `permute` applies one fixed pixel permutation (its own seed) to
    every split; the training pool is split into train/val by `split_seed`, independent of the run's seed.
    `image_size` < 28 average-pools the image first (e.g. 14 -> 196 pixel steps or 14 rows of 14).
    """

    def __init__(
        self,
        name: str,
        source: str = "torchvision",
        data_dir: str = "data",
        download: bool = True,
        permute: bool = False,
        permutation_seed: int = 73,
        split_seed: int = 73,
        val_size: int | None = None,
        layout: str = "pixels",
        image_size: int = 28,
    ) -> None:
        if source not in SOURCES:
            raise UserError(f"task.source must be one of {', '.join(SOURCES)}, got {source!r}")
        if layout not in LAYOUTS:
            raise UserError(f"task.layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
        if image_size <= 0 or 28 % image_size:
            raise UserError(f"task.image_size must divide 28 (28, 14, 7, 4, 2, 1), got {image_size}")
        if val_size is not None and val_size <= 0:
            raise UserError(f"task.val_size must be positive (or null for the source's default), got {val_size}")
        self.name, self.source, self.data_dir, self.download = name, source, data_dir, download
        self.permute, self.permutation_seed, self.split_seed = permute, permutation_seed, split_seed
        self.val_size = DEFAULT_VAL_SIZE[source] if val_size is None else val_size
        self.layout, self.image_size = layout, image_size

    @property
    def spec(self) -> TaskSpec:
        pixels = self.image_size**2
        if self.layout == "pixels":
            return TaskSpec(self.name, "sequence", d_input=1, n_classes=10, seq_len=pixels)
        return TaskSpec(self.name, "sequence", d_input=self.image_size, n_classes=10, seq_len=self.image_size)

    def permutation(self) -> torch.Tensor | None:
        """The fixed pixel order shared by train, val and test (None for sMNIST)."""
        if not self.permute:
            return None
        return torch.randperm(self.image_size**2, generator=torch.Generator().manual_seed(self.permutation_seed))

    def load(self) -> TaskData:
        if self.source == "bundled":
            pool_x, pool_y, test_x, test_y = load_bundled_mnist(self.split_seed)
        else:
            pool_x, pool_y, test_x, test_y = load_torchvision_mnist(self.data_dir, self.download)
        if self.val_size >= len(pool_y):
            raise UserError(f"task.val_size={self.val_size} leaves no training digits out of {len(pool_y)}")
        order = torch.randperm(len(pool_y), generator=torch.Generator().manual_seed(self.split_seed))
        train_idx, val_idx = order[: len(order) - self.val_size], order[len(order) - self.val_size :]
        sequences = self._to_sequences(pool_x)
        test = Split(self._to_sequences(test_x), test_y.long())
        record = {
            "source": self.source,
            "layout": self.layout,
            "image_size": self.image_size,
            "permuted": self.permute,
            "permutation_seed": self.permutation_seed if self.permute else None,
            "split_seed": self.split_seed,
            "sizes": {"train": len(train_idx), "val": len(val_idx), "test": len(test_y)},
        }
        return TaskData(Split(sequences[train_idx], pool_y[train_idx].long()),
                        Split(sequences[val_idx], pool_y[val_idx].long()), test, record)

    def _to_sequences(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float().div_(255.0).unsqueeze(1)
        if self.image_size != 28:
            x = F.avg_pool2d(x, 28 // self.image_size)
        x = x.flatten(1)
        permutation = self.permutation()
        if permutation is not None:
            x = x[:, permutation]
        spec = self.spec
        return x.reshape(len(images), spec.seq_len, spec.d_input).contiguous()
