"""The control for paper Table 1: the same jointly trained autoencoder with a plain linear readout of its code and
no circuit between them, so that the circuit rows can be read against what the code alone classifies."""

from __future__ import annotations

import torch
from torch import nn

from organics_bench.models.autoencoder import AutoencodedClassifier


class AutoencoderLinear(AutoencodedClassifier):
    """Autoencoder code (batch, code_size) -> Linear(code_size, n_classes); loss and protocol as the circuit rows."""

    def __init__(self, d_input: int, n_classes: int, code_size: int = 40) -> None:
        super().__init__(d_input, code_size)
        self.readout_layer = nn.Linear(code_size, n_classes)

    def classify(self, code: torch.Tensor) -> torch.Tensor:
        return self.readout_layer(code)
