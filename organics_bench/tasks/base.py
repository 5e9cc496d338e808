"""The contract between tasks, models and the trainer."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class TaskSpec:
    """What a model needs to know about a task. `kind` is "sequence" (x: batch, seq_len, d_input) or "static"."""

    name: str
    kind: str
    d_input: int
    n_classes: int
    seq_len: int = 1
    metrics: tuple[str, ...] = ("acc",)


@dataclass
class Split:
    """Inputs and integer labels of one split, held in memory."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class TaskData:
    """The three splits and a record of how they were made (seeds, sizes, source), kept with every result."""

    train: Split
    val: Split
    test: Split
    record: dict = field(default_factory=dict)
