"""The autoencoder front end of the static models, trained jointly with the classifier (docs/protocols.md,
'Table 1: architecture').

    encoder: d_input -> 360 ReLU -> 120 ReLU -> code_size Sigmoid
    decoder: code_size -> 120 ReLU -> 360 ReLU -> d_input Sigmoid
    loss    = cross_entropy(classify(code), label) + mse(decoder(code), x)     (unweighted sum)

For d_input = 784 and code_size = 40 the autoencoder has 662,264 parameters, as in the paper.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from organics_bench.models.base import StaticModel

HIDDEN = (360, 120)


def _mlp(sizes: list[int]) -> nn.Sequential:
    """Linear layers with ReLU between them and a Sigmoid at the end."""
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes, sizes[1:])):
        layers += [nn.Linear(fan_in, fan_out), nn.Sigmoid() if i == len(sizes) - 2 else nn.ReLU()]
    return nn.Sequential(*layers)


class Autoencoder(nn.Module):
    """Encoder to a code in (0, 1)^code_size and the mirror-image decoder back to (0, 1)^d_input."""

    def __init__(self, d_input: int, code_size: int = 40) -> None:
        super().__init__()
        sizes = [d_input, *HIDDEN, code_size]
        self.encoder = _mlp(sizes)
        self.decoder = _mlp(sizes[::-1])


class AutoencodedClassifier(StaticModel):
    """A static classifier that reads the autoencoder's code; subclasses implement `classify(code) -> logits`.

    Inputs may be images (batch, C, H, W) or vectors (batch, d_input); they are flattened here.
    """

    def __init__(self, d_input: int, code_size: int = 40) -> None:
        super().__init__()
        self.code_size = code_size
        self.autoencoder = Autoencoder(d_input, code_size)

    def classify(self, code: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The code (batch, code_size) of x."""
        return self.autoencoder.encoder(x.flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.encode(x))

    def loss(
        self, x: torch.Tensor, y: torch.Tensor, criterion: Callable[..., torch.Tensor] = F.cross_entropy
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(`criterion` (cross-entropy) + reconstruction MSE, logits), encoding x once."""
        flat = x.flatten(1)
        code = self.autoencoder.encoder(flat)
        logits = self.classify(code)
        return criterion(logits, y) + F.mse_loss(self.autoencoder.decoder(code), flat), logits
