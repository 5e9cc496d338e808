"""ORGaNICs fixed-point classifier for static inputs (paper Table 1; docs/equations.md,
'Static fixed-point layer').

Each layer is the steady state of the main ORGaNICs model (docs/equations.md, 'Main model'), time in units of tau:

    dy/dt = -y + b*z + (1 - sqrt[a]+) * W_r y
    da/dt = -a + (b0 sigma)^2 + W (y^2 * [a]+)

driven by z = W_zx x / ||W_zx x|| (unit norm per sample) and the input gain b = sigmoid(W_bx x); b0 = sigmoid(.)
is learned per neuron, sigma = 1 is fixed and W = exp(L) >= 0. The layer passes its firing rate [y_s]+^2 to the
next layer or to a linear readout. The steady state (y_s, a_s) is (`organics_bench.equations`):

    W_r = I       closed form  a_s = (sigma b0)^2 + W (b z)^2 + eps,  y_s = b z / sqrt(a_s)
    W_r bounded   Algorithm 1  (K iterations, gradients through all of them):
                  a_0 = (sigma b0)^2 + W (W_r b z)^2 + eps,  y_0 = W_r b z / sqrt(a_0)
                  y_k = solve(I - diag(1 - sqrt(a_{k-1})) W_r, b z)
                  a_k = (sigma b0)^2 + W (y_k^2 * a_{k-1}) + eps

with W_r / sigma_max(W_r) (largest singular value exactly 1) as the learned recurrence. `official_diag_a`
puts diag(a) where Algorithm 1 has diag(sqrt(a)), as the official code does (docs/reference-code.md, 'Quirk 4'); its
result is then not a fixed point of the ODE. `fixed_point_solver` says how Algorithm 1 runs, both with the same
iterates and gradient: "adjoint" (default) with a hand-written backward through the iterations and a batched LU
kernel on the CPU (`organics_bench.models.fixed_point_solver`), "autograd" as autograd through torch.linalg.solve
(the plain form, several times slower, kept for comparison).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from organics_bench.equations import (
    algorithm1,
    circuit_rhs,
    closed_form_fixed_point,
    initial_log_normalization,
    normalization_weights,
)
from organics_bench.models.autoencoder import AutoencodedClassifier
from organics_bench.models.base import LayerSteadyState
from organics_bench.models.fixed_point_solver import algorithm1_adjoint

RECURRENCES = ("identity", "bounded")
FIXED_POINT_SOLVERS = ("adjoint", "autograd")
EPS = 1e-10


def iterative_fixed_point(
    drive: torch.Tensor,
    floor: torch.Tensor,
    W: torch.Tensor,
    W_r: torch.Tensor,
    iterations: int,
    official_diag_a: bool = False,
    eps: float = EPS,
    solver: str = "adjoint",
) -> tuple[torch.Tensor, torch.Tensor]:
    """(y_K, a_K) of Algorithm 1 for a recurrence W_r with largest singular value 1, by `solver` (module docstring)."""
    if solver == "adjoint":
        return algorithm1_adjoint(drive, floor, W, W_r, iterations, official_diag_a, eps)
    *_, last = algorithm1(drive, floor, W, W_r, iterations, official_diag_a, eps)
    return last


class FixedPointLayer(nn.Module):
    """One ORGaNICs fixed-point layer (docs/equations.md, 'Layer forward pass'): input (batch, d_input) -> firing rate
    (batch, n_units)."""

    def __init__(
        self,
        d_input: int,
        n_units: int,
        recurrence: str = "identity",
        iterations: int = 10,
        official_diag_a: bool = False,
        sigma: float = 1.0,
        eps: float = EPS,
        fixed_point_solver: str = "adjoint",
    ) -> None:
        super().__init__()
        if recurrence not in RECURRENCES:
            raise ValueError(f"recurrence must be one of {RECURRENCES}, got {recurrence!r}")
        if fixed_point_solver not in FIXED_POINT_SOLVERS:
            raise ValueError(f"fixed_point_solver must be one of {FIXED_POINT_SOLVERS}, got {fixed_point_solver!r}")
        if official_diag_a and recurrence == "identity":
            raise ValueError("official_diag_a changes Algorithm 1, which only recurrence='bounded' uses")
        self.n_units, self.recurrence, self.iterations = n_units, recurrence, iterations
        self.official_diag_a, self.eps, self.fixed_point_solver = official_diag_a, eps, fixed_point_solver
        self.W_zx = nn.Parameter(nn.init.kaiming_uniform_(torch.empty(n_units, d_input), a=math.sqrt(5)))
        self.W_bx = nn.Parameter(torch.randn(n_units, d_input))  # official effective init: reference-code.md, Quirk 5
        self.b0_logit = nn.Parameter(torch.zeros(n_units))
        self.log_W = nn.Parameter(initial_log_normalization(n_units))
        if recurrence == "bounded":
            self.W_r = nn.Parameter(torch.eye(n_units))
        self.register_buffer("sigma", torch.tensor(sigma))

    def normalization_matrix(self) -> torch.Tensor:
        """W = exp(L) >= 0."""
        return normalization_weights(self.log_W)

    def recurrent_matrix(self) -> torch.Tensor | None:
        """W_r / sigma_max(W_r), or None for W_r = I."""
        if self.recurrence == "identity":
            return None
        return self.W_r / torch.linalg.matrix_norm(self.W_r, ord=2)

    def floor(self) -> torch.Tensor:
        """(sigma b0)^2, the constant term of the a equation."""
        return (self.sigma * torch.sigmoid(self.b0_logit)).square()

    def drive(self, x: torch.Tensor) -> torch.Tensor:
        """b*z with z = W_zx x / ||W_zx x|| and b = sigmoid(W_bx x)."""
        z = x @ self.W_zx.T
        z = z / z.norm(dim=-1, keepdim=True)
        return torch.sigmoid(x @ self.W_bx.T) * z

    def solve(self, drive: torch.Tensor) -> torch.Tensor:
        """The steady state [y_s, a_s] (batch, 2 n_units) for a drive b*z."""
        W_r = self.recurrent_matrix()
        if W_r is None:
            y, a = closed_form_fixed_point(drive, self.floor(), self.normalization_matrix(), self.eps)
        else:
            y, a = iterative_fixed_point(
                drive,
                self.floor(),
                self.normalization_matrix(),
                W_r,
                self.iterations,
                self.official_diag_a,
                self.eps,
                self.fixed_point_solver,
            )
        return torch.cat([y, a], -1)

    def vector_field(self, state: torch.Tensor, drive: torch.Tensor) -> torch.Tensor:
        """d[y, a]/dt of the main model (tau_y = tau_a = 1) at state [y, a] under a drive b*z."""
        y, a = state.split(self.n_units, -1)
        dy, da = circuit_rhs(y, a, drive, self.floor(), self.normalization_matrix(), self.recurrent_matrix())
        return torch.cat([dy, da], -1)

    def firing_rate(self, state: torch.Tensor) -> torch.Tensor:
        """Firing rate [y]+^2 of the principal neurons."""
        return F.relu(state[..., : self.n_units]).square()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.firing_rate(self.solve(self.drive(x)))


class OrganicsStatic(AutoencodedClassifier):
    """Autoencoder code -> ORGaNICs fixed-point layers -> Linear readout of the last layer's [y_s]+^2.

    Args:
        d_input: flattened input size. n_classes: output classes.
        layers: units per ORGaNICs layer ("50:50" in Table 1 is layers=[50]; the two-layer row is [120, 60]).
        recurrence: "identity" (W_r = I, closed form) or "bounded" (learned W_r / sigma_max(W_r), init I,
            Algorithm 1), for every layer.
        iterations: K, Algorithm 1's iterations (recurrence="bounded" only).
        official_diag_a: Algorithm 1 with diag(a) instead of diag(sqrt(a)), as the official code (not a true
            fixed point; off by default).
        code_size: the autoencoder's code size, the first layer's input.
        fixed_point_solver: how Algorithm 1 runs, same numbers either way: "adjoint" (hand-written backward,
            batched LU kernel on the CPU) or "autograd" (autograd through torch.linalg.solve, slower).
    """

    time_unit_ms = 2.0  # tau_y = tau_a, the paper's 2 ms (docs/equations.md, 'Eigenvalues of trained networks')

    def __init__(
        self,
        d_input: int,
        n_classes: int,
        layers: Sequence[int] = (50,),
        recurrence: str = "identity",
        iterations: int = 10,
        official_diag_a: bool = False,
        code_size: int = 40,
        fixed_point_solver: str = "adjoint",
    ) -> None:
        super().__init__(d_input, code_size)
        sizes = [code_size, *layers]
        self.layers = nn.ModuleList(
            FixedPointLayer(m, n, recurrence, iterations, official_diag_a, fixed_point_solver=fixed_point_solver)
            for m, n in zip(sizes, sizes[1:])
        )
        self.readout_layer = nn.Linear(sizes[-1], n_classes)

    def classify(self, code: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            code = layer(code)
        return self.readout_layer(code)

    def layer_steady_states(self, x: torch.Tensor) -> list[LayerSteadyState]:
        """Every layer's fixed point [y_s, a_s] for inputs x, first layer first (`HasSteadyState`)."""
        found, h = [], self.encode(x)
        for layer in self.layers:
            drive = layer.drive(h)
            state = layer.solve(drive)
            residual = layer.vector_field(state, drive).norm(dim=-1)
            found.append(LayerSteadyState(state, drive, residual, layer.vector_field, layer.n_units))
            h = layer.firing_rate(state)
        return found

    def recurrent_matrix(self) -> torch.Tensor | None:
        """The first layer's effective W_r (None for W_r = I)."""
        return self.layers[0].recurrent_matrix()
