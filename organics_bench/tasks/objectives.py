"""What a task trains for (`TaskSpec.objective`): the loss the trainer minimises and what its accuracy counts.

Each objective has a name (recorded with every run), `loss(outputs, targets, reduction="mean" | "sum")` and
`hits(outputs, targets)`: a boolean per example, whose mean is the trainer's "acc" column.
- cross_entropy: class logits (batch, n_classes) against integer labels; a hit is the right argmax.
- mse: one output (batch, 1) against real targets (batch,); a hit is an absolute error below 0.04, the criterion
  by which Hochreiter & Schmidhuber (1997) counted a sequence of the adding problem as solved.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from organics_bench.errors import UserError

HIT_TOLERANCE = 0.04


@dataclass(frozen=True)
class Objective:
    """A loss and the per-example success that accuracy counts."""

    name: str
    loss: Callable[..., torch.Tensor]
    hits: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def squared_error(outputs: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Mean (or summed) squared error of a single-output model's (batch, 1) outputs against (batch,) targets."""
    return F.mse_loss(outputs.squeeze(-1), targets, reduction=reduction)


def _right_class(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return outputs.argmax(-1) == targets


def _within_tolerance(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return (outputs.squeeze(-1) - targets).abs() < HIT_TOLERANCE


CROSS_ENTROPY = Objective("cross_entropy", F.cross_entropy, _right_class)
MSE = Objective("mse", squared_error, _within_tolerance)
OBJECTIVES = {objective.name: objective for objective in (CROSS_ENTROPY, MSE)}


def objective(name: str) -> Objective:
    """The objective called `name` (a task's `TaskSpec.objective`)."""
    if name not in OBJECTIVES:
        raise UserError(f"unknown objective {name!r}; objectives: {', '.join(OBJECTIVES)}")
    return OBJECTIVES[name]
