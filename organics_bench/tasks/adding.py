"""The adding problem (Hochreiter & Schmidhuber 1997), in the form coRNN (Rusch & Mishra 2021) and LEM (Rusch et
al. 2022) train on (docs/protocols.md, 'Adding problem').

Each step has two input channels: a value drawn uniformly from [0, 1] and a marker that is 1 at exactly two steps,
one drawn uniformly from the first half of the sequence (steps 0 .. T//2 - 1) and one from the second (T//2 .. T-1),
and 0 elsewhere. The target is the sum of the two marked values; the loss is the mean squared error of one output
(objective "mse"). Predicting 1 always scores Var(u1 + u2) = 1/6 ~ 0.167, the baseline a model has to beat. Train
and validation sets come from `seed`, the test set from `test_seed`: generated, no files.
"""

from __future__ import annotations

import torch

from organics_bench.errors import UserError
from organics_bench.tasks.base import Split, TaskData, TaskSpec

BASELINE_MSE = 1 / 6  # E[(u1 + u2 - 1)^2] for u1, u2 ~ U[0, 1]: the MSE of always predicting 1
BYTES_PER_STEP = 2 * 4  # two float32 channels
MEMORY_SHARE = 0.5  # the sequences may take at most this share of the memory available (training needs the rest)


class AddingProblem:
    """Sequences of `length` steps; `markers` must be 2 (the task's definition, checked so that a config says so)."""

    def __init__(
        self,
        name: str,
        length: int = 200,
        markers: int = 2,
        n_train: int = 50000,
        n_val: int = 1000,
        n_test: int = 1000,
        seed: int = 97,
        test_seed: int = 1997,
    ) -> None:
        if length < 2:
            raise UserError(f"task.length must be at least 2 (one marker in each half), got {length}")
        if markers != 2:
            raise UserError(f"task.markers must be 2: the adding problem sums exactly two marked values, got {markers}")
        if min(n_train, n_val, n_test) <= 0:
            raise UserError("task.n_train, task.n_val and task.n_test must be positive")
        self.name, self.length, self.markers = name, length, markers
        self.n_train, self.n_val, self.n_test = n_train, n_val, n_test
        self.seed, self.test_seed = seed, test_seed
        check_fits_in_memory(n_train + n_val + n_test, length)

    @property
    def spec(self) -> TaskSpec:
        return TaskSpec(
            self.name,
            "sequence",
            d_input=2,
            n_classes=1,
            input_shape=(self.length, 2),
            seq_len=self.length,
            metrics=("mse", "acc"),
            objective="mse",
        )

    def load(self) -> TaskData:
        generator = torch.Generator().manual_seed(self.seed)
        train = adding_sequences(self.n_train, self.length, generator)
        val = adding_sequences(self.n_val, self.length, generator)
        test = adding_sequences(self.n_test, self.length, torch.Generator().manual_seed(self.test_seed))
        record = {
            "seed": self.seed,
            "test_seed": self.test_seed,
            "length": self.length,
            "markers": self.markers,
            "sizes": {"train": self.n_train, "val": self.n_val, "test": self.n_test},
            "baseline": {
                "predictor": "always 1",
                "mse": BASELINE_MSE,
                "test_mse": (test.y - 1).square().mean().item(),
            },
        }
        return TaskData(train, val, test, record)


def adding_sequences(count: int, length: int, generator: torch.Generator) -> Split:
    """`count` sequences x (count, length, 2) = (value, marker) per step, and targets y (count,): the marked sum."""
    values = torch.rand(count, length, generator=generator)
    half = length // 2
    first = torch.randint(0, half, (count,), generator=generator)
    second = torch.randint(half, length, (count,), generator=generator)
    marker = torch.zeros(count, length)
    rows = torch.arange(count)
    marker[rows, first] = 1.0
    marker[rows, second] = 1.0
    return Split(torch.stack((values, marker), dim=-1), (values * marker).sum(1))


def check_fits_in_memory(count: int, length: int) -> None:
    """Refuse sets whose sequences would take more than `MEMORY_SHARE` of the memory available now (Linux's
    MemAvailable; no check where it cannot be read)."""
    needed = count * length * BYTES_PER_STEP
    available = available_memory()
    if available is not None and needed > MEMORY_SHARE * available:
        raise UserError(
            f"task: {count:,} sequences (n_train + n_val + n_test) of length {length} take {needed / 2**30:.1f} GiB, "
            f"more than {MEMORY_SHARE:.0%} of the {available / 2**30:.1f} GiB of memory available; lower task.n_train, "
            "task.n_val, task.n_test or task.length"
        )


def available_memory() -> int | None:
    """Bytes of memory available to a new process (/proc/meminfo's MemAvailable), or None where unknown."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None
