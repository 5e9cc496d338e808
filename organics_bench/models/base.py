"""The model contracts that the trainer and the diagnostics are written against."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Classifier(nn.Module):
    """Any model the trainer can train: `forward(x) -> logits` and a training loss.

    `kind` says which tasks it takes: "sequence" (x: batch, time, d_input) or "static" (x: batch, *input_shape).
    """

    kind = "sequence"

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(training loss, logits). Cross-entropy unless a model adds terms (e.g. an autoencoder's reconstruction)."""
        logits = self(x)
        return F.cross_entropy(logits, y), logits

    def recurrent_matrix(self) -> torch.Tensor | None:
        """The effective recurrent weight matrix whose spectrum is logged each epoch, if the model has one."""
        return None


class DynamicalModel(Classifier):
    """A recurrent classifier whose state is one tensor of shape (batch, state_size).

    Subclasses implement `initial_state`, `step` and `readout`; `forward` runs the plain per-step loop, and a
    subclass may override `run_steps` with a faster path that is tested to match it.
    """

    kind = "sequence"

    def initial_state(self, batch: int) -> torch.Tensor:
        raise NotImplementedError

    def step(self, x_t: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """One time step: x_t (batch, d_input), state (batch, state_size) -> next state."""
        raise NotImplementedError

    def readout(self, state: torch.Tensor) -> torch.Tensor:
        """Class logits (batch, n_classes) from a state."""
        raise NotImplementedError

    def run_steps(self, x: torch.Tensor) -> torch.Tensor:
        """Final state after feeding x (batch, time, d_input) one `step` at a time."""
        state = self.initial_state(x.shape[0])
        for t in range(x.shape[1]):
            state = self.step(x[:, t], state)
        return state

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.readout(self.run_steps(x))


class StaticModel(Classifier):
    """A classifier of static inputs; fixed-point models also expose `steady_state(x) -> (state, residual)`."""

    kind = "static"


def count_trainable(model: nn.Module) -> int:
    """Number of trainable scalar parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
