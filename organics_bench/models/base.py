"""The dynamical-model protocol that the trainer and the diagnostics are written against."""
from __future__ import annotations

import torch
from torch import nn


class DynamicalModel(nn.Module):
    """A recurrent classifier whose state is one tensor of shape (batch, state_size).

    Subclasses implement `initial_state`, `step` and `readout`; `forward` runs the plain per-step loop, and a
    subclass may override it with a faster path that is tested to match it exactly.
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

    def recurrent_matrix(self) -> torch.Tensor | None:
        """The effective recurrent weight matrix whose spectrum is logged each epoch, if the model has one."""
        return None

    def run_steps(self, x: torch.Tensor) -> torch.Tensor:
        """Final state after feeding x (batch, time, d_input) one `step` at a time."""
        state = self.initial_state(x.shape[0])
        for t in range(x.shape[1]):
            state = self.step(x[:, t], state)
        return state

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.readout(self.run_steps(x))


def count_trainable(model: nn.Module) -> int:
    """Number of trainable scalar parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
