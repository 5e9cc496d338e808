"""The continuous-time ORGaNICs circuit (docs/equations.md, 'Main model'), its fixed points ('Steady state and
divisive normalization', 'Algorithm 1') and the initialisation of its normalization weights, written once for the
sequence cell, the static fixed-point models and the theory experiments.

    tau_y dy/dt = -y + b z + (1 - sqrt[a]+) W_r y'        y' = y (main model) or [y]+ (rectified model)
    tau_a da/dt = -a + (b0 sigma)^2 + W (y'^2 * [a]+)

Every matrix may be shared, shape (n, n), or one per sample, shape (..., n, n); W_r = None means I.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F

LinearSolve = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def matvec(M: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """M @ v for M (..., n, n) or (n, n) and v (..., n); a shared M is one matrix multiply over the batch."""
    if M.dim() == 2:
        return v @ M.T
    return (M @ v.unsqueeze(-1)).squeeze(-1)


def initial_log_normalization(n: int) -> torch.Tensor:
    """L of W = exp(L) at init (docs/equations.md, 'Parameters and initialisation'): off-diagonal U(-1, 0), diagonal
    0, so W lies in [1/e, 1] with a unit diagonal. Draws n^2 numbers from torch's global generator."""
    log_w = torch.empty(n, n).uniform_(-1.0, 0.0)
    return log_w.fill_diagonal_(0.0)


def normalization_weights(log_W: torch.Tensor, clamp: bool = False) -> torch.Tensor:
    """The normalization weights W = exp(L) >= 0, or min(exp(L), 1) with `clamp` (the post-paper code)."""
    W = torch.exp(log_W)
    return W.clamp(max=1.0) if clamp else W


def circuit_rhs(
    y: torch.Tensor,
    a: torch.Tensor,
    drive: torch.Tensor,
    floor: torch.Tensor,
    W: torch.Tensor,
    W_r: torch.Tensor | None = None,
    rectified: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The right-hand sides (tau_y dy/dt, tau_a da/dt), with drive = b z and floor = (b0 sigma)^2."""
    y_out = F.relu(y) if rectified else y
    a_pos = F.relu(a)
    recurrent = y_out if W_r is None else matvec(W_r, y_out)
    dy = -y + drive + (1.0 - torch.sqrt(a_pos)) * recurrent
    da = -a + floor + matvec(W, y_out.square() * a_pos)
    return dy, da


def closed_form_fixed_point(
    drive: torch.Tensor,
    floor: torch.Tensor,
    W: torch.Tensor | Callable[[torch.Tensor], torch.Tensor],
    eps: float = 0.0,
    rectified: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed point (y_s, a_s) for W_r = I, divisive normalization:

        a_s = (b0 sigma)^2 + W (b z)^2 + eps,   y_s = b z / sqrt(a_s)

    The rectified model pools [b z]+^2 and has y_s = b z where b z <= 0. W is a matrix, as `matvec` takes it, or the
    map v -> W v where W is applied otherwise (the convolutional layer pools over channels and positions).
    """
    energy = (F.relu(drive) if rectified else drive).square()
    a = floor + (W(energy) if callable(W) else matvec(W, energy)) + eps
    y = drive / torch.sqrt(a)
    return (torch.where(drive > 0, y, drive) if rectified else y), a


def gated_solve(c: torch.Tensor, W_r: torch.Tensor, drive: torch.Tensor) -> torch.Tensor:
    """y = (I - diag(c) W_r)^-1 drive per sample, by torch.linalg.solve."""
    eye = torch.eye(W_r.shape[-1], dtype=W_r.dtype, device=W_r.device)
    return torch.linalg.solve(eye - c.unsqueeze(-1) * W_r, drive.unsqueeze(-1)).squeeze(-1)


def algorithm1(
    drive: torch.Tensor,
    floor: torch.Tensor,
    W: torch.Tensor,
    W_r: torch.Tensor,
    iterations: int,
    official_diag_a: bool = False,
    eps: float = 0.0,
    solve: LinearSolve = gated_solve,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield the iterates (y_k, a_k), k = 0..iterations, for W_r with largest singular value 1 (lambda = 1):

        a_0 = (b0 sigma)^2 + W (W_r b z)^2 + eps,  y_0 = W_r b z / sqrt(a_0)
        y_k = solve(I - diag(1 - sqrt(a_{k-1})) W_r, b z),  a_k = (b0 sigma)^2 + W (y_k^2 * a_{k-1}) + eps

    `official_diag_a` uses diag(a) for diag(sqrt(a)), as the official code does; it converges elsewhere than the
    ODE's fixed point (docs/reference-code.md, 'Quirk 4'). `solve(c, W_r, b z)` solves the y equation, c = 1 - sqrt(a)
    (`gated_solve`, or a solver that keeps its factors for a backward pass).
    """
    start = matvec(W_r, drive)
    a = floor + matvec(W, start.square()) + eps
    y = start / torch.sqrt(a)
    yield y, a
    for _ in range(iterations):
        gain = a if official_diag_a else torch.sqrt(a)
        y = solve(1.0 - gain, W_r, drive)
        a = floor + matvec(W, y.square() * a) + eps
        yield y, a
