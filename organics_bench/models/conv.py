"""Convolutional classifiers for static images: a divisive-normalization (ORGaNICs) stack and a plain CNN.

Each ORGaNICs layer is the closed-form steady state of the circuit with W_r = I (docs/equations.md, 'Closed form
(W_r = I)'), applied per channel and position, with normalization pooled over channels (W = exp(L) >= 0) and a 3x3
neighbourhood:

    z = conv_z(x),  b = sigmoid(conv_b(x)),  b0 = sigmoid(beta)
    a = (sigma b0)^2 + avgpool3x3(W (b z)^2) + eps,  y = b z / sqrt(a),  output = [y]+^2

(after the official code's unused `fixed_point/conv.py` layer, whose all-ones W is frozen and pools over space;
docs/reference-code.md, 'Unused convolutional layer').
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from organics_bench.equations import closed_form_fixed_point, initial_log_normalization, normalization_weights
from organics_bench.models.base import StaticModel

EPS = 1e-10


class ConvOrganicsLayer(nn.Module):
    """One convolutional divisive-normalization layer at its steady state; returns the firing rate [y]+^2."""

    def __init__(self, in_channels: int, out_channels: int, sigma: float = 1.0) -> None:
        super().__init__()
        self.conv_z = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.conv_b = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.beta = nn.Parameter(torch.zeros(out_channels))
        self.log_W = nn.Parameter(initial_log_normalization(out_channels))
        self.register_buffer("sigma", torch.tensor(sigma))

    def normalization_pool(self, energy: torch.Tensor) -> torch.Tensor:
        """The pool W v of v (batch, channels, H, W): W = exp(L) over channels (a 1x1 convolution), then a 3x3 average
        over positions."""
        pooled = F.conv2d(energy, normalization_weights(self.log_W)[:, :, None, None])
        return F.avg_pool2d(pooled, 3, stride=1, padding=1, count_include_pad=False)

    def fixed_point(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(y, a) at the normalization fixed point for inputs x."""
        drive = torch.sigmoid(self.conv_b(x)) * self.conv_z(x)
        floor = (self.sigma * torch.sigmoid(self.beta)).square()[None, :, None, None]
        return closed_form_fixed_point(drive, floor, self.normalization_pool, EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.fixed_point(x)[0]).square()


class _ConvStack(StaticModel):
    """Conv blocks, each followed by 2x2 max-pooling, then a linear readout."""

    def __init__(self, blocks: list[nn.Module], input_shape: tuple[int, ...], n_classes: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        with torch.no_grad():
            features = self.features(torch.zeros(1, *input_shape)).shape[1]
        self.readout_layer = nn.Linear(features, n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = F.max_pool2d(block(x), 2)
        return x.flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.readout_layer(self.features(x))


class ConvOrganics(_ConvStack):
    """A stack of convolutional ORGaNICs layers (channels per layer) with a linear readout."""

    def __init__(
        self, input_shape: tuple[int, ...], n_classes: int, channels: list[int] = (32, 64, 128), sigma: float = 0.1
    ) -> None:
        widths = [input_shape[0], *channels]
        layers = [ConvOrganicsLayer(i, o, sigma) for i, o in zip(widths, widths[1:])]
        super().__init__(layers, input_shape, n_classes)


class CNN(_ConvStack):
    """The reference: conv 3x3 + ReLU blocks of the same depth, widths chosen for a comparable parameter count."""

    def __init__(self, input_shape: tuple[int, ...], n_classes: int, channels: list[int] = (48, 96, 176)) -> None:
        widths = [input_shape[0], *channels]
        blocks = [nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.ReLU()) for i, o in zip(widths, widths[1:])]
        super().__init__(blocks, input_shape, n_classes)
