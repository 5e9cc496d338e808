"""The contract between tasks, models and the trainer."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch


@dataclass(frozen=True)
class TaskSpec:
    """What a model needs to know about a task.

    `kind` is "sequence" (x: batch, seq_len, d_input) or "static" (x: batch, *input_shape); `d_input` is the
    size of one step's input (sequence) or of the flattened input (static). `objective` names what the trainer
    minimises (`tasks/objectives.py`): "cross_entropy" over `n_classes` logits, or "mse" of one output
    (`n_classes` = 1) against real targets.
    """

    name: str
    kind: str
    d_input: int
    n_classes: int
    input_shape: tuple[int, ...]
    seq_len: int = 1
    metrics: tuple[str, ...] = ("acc",)
    objective: str = "cross_entropy"


@runtime_checkable
class SummarizesExtraTests(Protocol):
    """A task whose extra test sets (`TaskData.extra_tests`) mean more together than one by one: `summarize` turns
    their accuracies {name: acc} into the record's `extra_tests` entry (e.g. parity: accuracy by length and the
    longest length solved)."""

    def summarize(self, extra_accuracies: dict[str, float]) -> dict: ...


@dataclass
class Split:
    """Inputs and targets of one split, held in memory: integer labels, or real values for an "mse" task."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class TaskData:
    """The three splits and a record of how they were made (seeds, sizes, source), kept with every result.

    `extra_tests` are further test sets evaluated with the best-validation weights (e.g. parity at longer lengths);
    `curriculum(epoch)`, when given, is a boolean mask of the training examples that epoch may use.
    """

    train: Split
    val: Split
    test: Split
    record: dict = field(default_factory=dict)
    extra_tests: dict[str, Split] = field(default_factory=dict)
    curriculum: Callable[[int], torch.Tensor] | None = None


def task_data(
    pool_x: torch.Tensor,
    pool_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    val_size: int,
    seed: int,
    record: dict,
) -> TaskData:
    """Train and validation from the pool (`split_train_val`), the test split as given, and `record` completed with
    the three sizes."""
    train, val = split_train_val(pool_x, pool_y, val_size, seed)
    test = Split(test_x, test_y)
    return TaskData(train, val, test, {**record, "sizes": {"train": len(train), "val": len(val), "test": len(test)}})


def split_train_val(x: torch.Tensor, y: torch.Tensor, val_size: int, seed: int) -> tuple[Split, Split]:
    """The last `val_size` of a seeded permutation is validation: `random_split([n - val, val], seed)`'s indices."""
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    train, val = order[: len(y) - val_size], order[len(y) - val_size :]
    return Split(x[train], y[train]), Split(x[val], y[val])
