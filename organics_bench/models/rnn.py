"""Conventional recurrent baselines on torch's fused kernels: LSTM, GRU and a vanilla tanh RNN.

Training runs the fused `nn.LSTM` / `nn.GRU` / `nn.RNN`; `step` writes out the same map per step (torch's gate
equations and weight layout) for the diagnostics, and a test checks the two agree.
"""

from __future__ import annotations

import torch
from torch import nn

from organics_bench.models.base import DynamicalModel


class _FusedRecurrent(DynamicalModel):
    """One-layer torch RNN module + linear readout of the last hidden state."""

    rnn_class: type[nn.RNNBase]
    state_multiple = 1

    def __init__(self, d_input: int, n_classes: int, hidden_size: int = 128) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.rnn = self.rnn_class(d_input, hidden_size, batch_first=True)
        self.readout_layer = nn.Linear(hidden_size, n_classes)

    def initial_state(self, batch: int) -> torch.Tensor:
        return self.rnn.weight_hh_l0.new_zeros(batch, self.state_multiple * self.hidden_size)

    def readout(self, state: torch.Tensor) -> torch.Tensor:
        return self.readout_layer(state[..., : self.hidden_size])

    def _projections(self, x_t: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return (x_t @ self.rnn.weight_ih_l0.T + self.rnn.bias_ih_l0, h @ self.rnn.weight_hh_l0.T + self.rnn.bias_hh_l0)


class LSTM(_FusedRecurrent):
    """LSTM; state = [h, c]."""

    rnn_class = nn.LSTM
    state_multiple = 2

    def step(self, x_t: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        h, c = state.split(self.hidden_size, -1)
        i, f, g, o = sum(self._projections(x_t, h)).chunk(4, -1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.cat([torch.sigmoid(o) * torch.tanh(c), c], -1)

    def run_steps(self, x: torch.Tensor) -> torch.Tensor:
        _, (h, c) = self.rnn(x)
        return torch.cat([h[-1], c[-1]], -1)


class GRU(_FusedRecurrent):
    """GRU; state = h."""

    rnn_class = nn.GRU

    def step(self, x_t: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        from_input, from_state = self._projections(x_t, state)
        r_x, z_x, n_x = from_input.chunk(3, -1)
        r_h, z_h, n_h = from_state.chunk(3, -1)
        r, z = torch.sigmoid(r_x + r_h), torch.sigmoid(z_x + z_h)
        return (1 - z) * torch.tanh(n_x + r * n_h) + z * state

    def run_steps(self, x: torch.Tensor) -> torch.Tensor:
        return self.rnn(x)[1][-1]


class TanhRNN(_FusedRecurrent):
    """Vanilla Elman RNN h' = tanh(W_ih x + W_hh h + b); state = h."""

    rnn_class = nn.RNN

    def step(self, x_t: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        return torch.tanh(sum(self._projections(x_t, state)))

    def run_steps(self, x: torch.Tensor) -> torch.Tensor:
        return self.rnn(x)[1][-1]
