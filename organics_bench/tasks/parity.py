"""Bit-stream parity: read bits one per step, output the parity of the ones (docs/protocols.md, 'Parity tasks').

Bits are one-hot (d_input = 2). Training and validation strings have random lengths in
[train_min_length, train_max_length], left-padded with all-zero inputs ("no bit") to train_max_length; each
test length L is its own test set of strings of exactly L bits, to measure length generalisation. With
`curriculum_epochs` = N > 0, epoch e (from 0) trains only on strings up to
train_min_length + (train_max_length - train_min_length) * min(1, (e + 1) / N) bits.
"""

from __future__ import annotations

import torch

from organics_bench.errors import UserError
from organics_bench.tasks.base import Split, TaskData, TaskSpec


class Parity:
    """Generated from `seed` alone (no files). `test_lengths` longer than train_max_length test extrapolation."""

    def __init__(
        self,
        name: str,
        train_min_length: int = 1,
        train_max_length: int = 40,
        test_lengths: list[int] | tuple[int, ...] = (40, 64, 128, 256),
        n_train: int = 20000,
        n_val: int = 2000,
        n_test: int = 2000,
        seed: int = 73,
        curriculum_epochs: int = 0,
    ) -> None:
        if not 1 <= train_min_length <= train_max_length:
            raise UserError(
                f"task lengths need 1 <= train_min_length <= train_max_length, got "
                f"{train_min_length} and {train_max_length}"
            )
        if not test_lengths or min(test_lengths) < 1:
            raise UserError(f"task.test_lengths must be positive lengths, got {list(test_lengths)}")
        if min(n_train, n_val, n_test) <= 0:
            raise UserError("task.n_train, task.n_val and task.n_test must be positive")
        if curriculum_epochs < 0:
            raise UserError(f"task.curriculum_epochs must be >= 0 (0 = no curriculum), got {curriculum_epochs}")
        self.name, self.min_len, self.max_len = name, train_min_length, train_max_length
        self.test_lengths = sorted(set(test_lengths))
        self.n_train, self.n_val, self.n_test, self.seed = n_train, n_val, n_test, seed
        self.curriculum_epochs = curriculum_epochs

    @property
    def spec(self) -> TaskSpec:
        return TaskSpec(
            self.name, "sequence", d_input=2, n_classes=2, input_shape=(self.max_len, 2), seq_len=self.max_len
        )

    def load(self) -> TaskData:
        generator = torch.Generator().manual_seed(self.seed)
        train = self._variable_length(self.n_train, generator)
        val = self._variable_length(self.n_val, generator)
        tests = {length: self._fixed_length(self.n_test, length, generator) for length in self.test_lengths}
        in_distribution = max((L for L in self.test_lengths if L <= self.max_len), default=self.test_lengths[0])
        record = {
            "seed": self.seed,
            "train_lengths": [self.min_len, self.max_len],
            "test_lengths": self.test_lengths,
            "test_split_length": in_distribution,
            "curriculum_epochs": self.curriculum_epochs,
            "sizes": {"train": self.n_train, "val": self.n_val, "test_per_length": self.n_test},
        }
        lengths = train.x.sum((1, 2))
        curriculum = (lambda epoch: lengths <= self.curriculum_length(epoch)) if self.curriculum_epochs else None
        return TaskData(
            train,
            val,
            tests[in_distribution],
            record,
            extra_tests={f"len{length}": split for length, split in tests.items()},
            curriculum=curriculum,
        )

    def curriculum_length(self, epoch: int) -> int:
        """The longest training string allowed in `epoch` (0-based)."""
        fraction = min(1.0, (epoch + 1) / self.curriculum_epochs) if self.curriculum_epochs else 1.0
        return round(self.min_len + (self.max_len - self.min_len) * fraction)

    @staticmethod
    def summarize(extra_accuracies: dict[str, float]) -> dict:
        """Accuracy per test length and the longest length solved at >= 99%."""
        by_length = {int(name.removeprefix("len")): acc for name, acc in extra_accuracies.items()}
        solved = [length for length, acc in by_length.items() if acc >= 0.99]
        return {"acc_by_length": dict(sorted(by_length.items())), "longest_solved_99": max(solved, default=None)}

    def _variable_length(self, count: int, generator: torch.Generator) -> Split:
        lengths = torch.randint(self.min_len, self.max_len + 1, (count,), generator=generator)
        bits = torch.randint(0, 2, (count, self.max_len), generator=generator)
        present = torch.arange(self.max_len) >= (self.max_len - lengths)[:, None]  # left padding
        bits = bits * present
        x = torch.nn.functional.one_hot(bits, 2).float() * present[..., None]
        return Split(x, bits.sum(1) % 2)

    @staticmethod
    def _fixed_length(count: int, length: int, generator: torch.Generator) -> Split:
        bits = torch.randint(0, 2, (count, length), generator=generator)
        return Split(torch.nn.functional.one_hot(bits, 2).float(), bits.sum(1) % 2)
