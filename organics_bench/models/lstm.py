"""LSTM baseline: torch's fused `nn.LSTM`, read out from the last hidden state."""
from __future__ import annotations

import torch
from torch import nn

from organics_bench.models.base import DynamicalModel


class LSTM(DynamicalModel):
    """One-layer LSTM classifier. Training runs the fused kernel; `step` is the same map written out per step."""

    def __init__(self, d_input: int, n_classes: int, hidden_size: int = 128) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.rnn = nn.LSTM(d_input, hidden_size, batch_first=True)
        self.readout_layer = nn.Linear(hidden_size, n_classes)

    def initial_state(self, batch: int) -> torch.Tensor:
        return self.rnn.weight_hh_l0.new_zeros(batch, 2 * self.hidden_size)

    def step(self, x_t: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        h, c = state.split(self.hidden_size, -1)
        pre = x_t @ self.rnn.weight_ih_l0.T + self.rnn.bias_ih_l0 + h @ self.rnn.weight_hh_l0.T + self.rnn.bias_hh_l0
        i, f, g, o = pre.chunk(4, -1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return torch.cat([h, c], -1)

    def readout(self, state: torch.Tensor) -> torch.Tensor:
        return self.readout_layer(state[..., : self.hidden_size])

    def run_steps(self, x: torch.Tensor) -> torch.Tensor:
        _, (h, c) = self.rnn(x)
        return torch.cat([h[-1], c[-1]], -1)
