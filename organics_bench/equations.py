"""The continuous-time ORGaNICs circuit (docs/equations.md, 'Main model') and Algorithm 1 ('Algorithm 1'), written
once for the static fixed-point models and the theory experiments.

    tau_y dy/dt = -y + b z + (1 - sqrt[a]+) W_r y'        y' = y (main model) or [y]+ (rectified model)
    tau_a da/dt = -a + (b0 sigma)^2 + W (y'^2 * [a]+)

Every matrix may be shared, shape (n, n), or one per sample, shape (..., n, n); W_r = None means I.
"""
from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F


def matvec(M: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """M @ v for M (..., n, n) or (n, n) and v (..., n); a shared M is one matrix multiply over the batch."""
    if M.dim() == 2:
        return v @ M.T
    return (M @ v.unsqueeze(-1)).squeeze(-1)


def circuit_rhs(y: torch.Tensor, a: torch.Tensor, drive: torch.Tensor, floor: torch.Tensor, W: torch.Tensor,
                W_r: torch.Tensor | None = None, rectified: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The right-hand sides (tau_y dy/dt, tau_a da/dt), with drive = b z and floor = (b0 sigma)^2."""
    y_out = F.relu(y) if rectified else y
    a_pos = F.relu(a)
    recurrent = y_out if W_r is None else matvec(W_r, y_out)
    dy = -y + drive + (1.0 - torch.sqrt(a_pos)) * recurrent
    da = -a + floor + matvec(W, y_out.square() * a_pos)
    return dy, da


def algorithm1(drive: torch.Tensor, floor: torch.Tensor, W: torch.Tensor, W_r: torch.Tensor, iterations: int,
               official_diag_a: bool = False, eps: float = 0.0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield the iterates (y_k, a_k), k = 0..iterations, for W_r with largest singular value 1 (lambda = 1):

        a_0 = (b0 sigma)^2 + W (W_r b z)^2 + eps,  y_0 = W_r b z / sqrt(a_0)
        y_k = solve(I - diag(1 - sqrt(a_{k-1})) W_r, b z),  a_k = (b0 sigma)^2 + W (y_k^2 * a_{k-1}) + eps

    `official_diag_a` uses diag(a) for diag(sqrt(a)), as the official code does; it converges elsewhere than the
    ODE's fixed point (docs/reference-code.md, 'Quirk 4').
    """
    start = matvec(W_r, drive)
    a = floor + matvec(W, start.square()) + eps
    y = start / torch.sqrt(a)
    yield y, a
    eye = torch.eye(W_r.shape[-1], dtype=W_r.dtype, device=W_r.device)
    for _ in range(iterations):
        gain = a if official_diag_a else torch.sqrt(a)
        y = torch.linalg.solve(eye - (1.0 - gain).unsqueeze(-1) * W_r, drive.unsqueeze(-1)).squeeze(-1)
        a = floor + matvec(W, y.square() * a) + eps
        yield y, a
