"""Sequential MNIST (sMNIST) and permuted sequential MNIST (psMNIST): the paper protocol of docs/protocols.md,
'Table 2: task'."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from organics_bench.errors import UserError
from organics_bench.tasks.base import TaskData, TaskSpec, task_data
from organics_bench.tasks.mnist_source import check_source, load_mnist

LAYOUTS = ("pixels", "rows")


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
        self.val_size = check_source(source, val_size)
        if layout not in LAYOUTS:
            raise UserError(f"task.layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
        if image_size <= 0 or 28 % image_size:
            raise UserError(f"task.image_size must divide 28 (28, 14, 7, 4, 2, 1), got {image_size}")
        self.name, self.source, self.data_dir, self.download = name, source, data_dir, download
        self.permute, self.permutation_seed, self.split_seed = permute, permutation_seed, split_seed
        self.layout, self.image_size = layout, image_size

    @property
    def spec(self) -> TaskSpec:
        pixels = self.image_size**2
        seq_len, d_input = (pixels, 1) if self.layout == "pixels" else (self.image_size, self.image_size)
        return TaskSpec(
            self.name, "sequence", d_input=d_input, n_classes=10, input_shape=(seq_len, d_input), seq_len=seq_len
        )

    def permutation(self) -> torch.Tensor | None:
        """The fixed pixel order shared by train, val and test (None for sMNIST)."""
        if not self.permute:
            return None
        return torch.randperm(self.image_size**2, generator=torch.Generator().manual_seed(self.permutation_seed))

    def load(self) -> TaskData:
        pool_x, pool_y, test_x, test_y = load_mnist(
            self.source, self.data_dir, self.download, self.split_seed, self.val_size
        )
        record = {
            "source": self.source,
            "layout": self.layout,
            "image_size": self.image_size,
            "permuted": self.permute,
            "permutation_seed": self.permutation_seed if self.permute else None,
            "split_seed": self.split_seed,
        }
        return task_data(
            self._to_sequences(pool_x),
            pool_y.long(),
            self._to_sequences(test_x),
            test_y.long(),
            self.val_size,
            self.split_seed,
            record,
        )

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
