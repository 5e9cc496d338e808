"""Stabilized supralinear network (SSN), the contrast model: τ_i dr_i/dt = -r_i + k ⌊Σ_j W_ij r_j + h_i⌋^n.

Batched like :mod:`organics_bench.theory.circuit`: r, h, tau (..., N), W (..., N, N); time in ms, firing rates in Hz.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from organics_bench.equations import matvec
from organics_bench.theory.circuit import DTYPE

# Two-population E/I weights |J_ab| of Ahmadian et al. 2013 (rows: to E, to I; columns: from E, from I).
J_BASE = ((1.25, 0.65), (1.2, 0.5))


def ssn_vector_field(r: Tensor, W: Tensor, h: Tensor, tau: Tensor, k: float = 0.04, n: float = 2.0) -> Tensor:
    """dr/dt of the SSN."""
    return (-r + k * torch.relu(matvec(W, r) + h) ** n) / tau


def ssn_jacobian(r: Tensor, W: Tensor, h: Tensor, tau: Tensor, k: float = 0.04, n: float = 2.0) -> Tensor:
    """T⁻¹(-I + diag(φ'(u)) W) with φ'(u) = n k ⌊u⌋^(n-1), u = W r + h."""
    gain = n * k * torch.relu(matvec(W, r) + h) ** (n - 1)
    eye = torch.eye(r.shape[-1], dtype=r.dtype)
    return (-eye + gain.unsqueeze(-1) * W) / tau.unsqueeze(-1)


def sample_ssn(
    batch: int,
    n_e: int,
    n_i: int,
    gen: torch.Generator,
    spread: float = 0.3,
    j_base: tuple[tuple[float, float], tuple[float, float]] = J_BASE,
) -> Tensor:
    """Random Dale's-law weights (batch, N, N), E columns >= 0, I columns <= 0.

    Per circuit J_ab = j_base_ab · 10^U(-spread, spread); W_ij = ± J_ab · U(0.5, 1.5) / N_b for i in a, j in b.
    """
    log_jitter = (2 * torch.rand(batch, 2, 2, generator=gen, dtype=DTYPE) - 1) * spread
    J = torch.tensor(j_base, dtype=DTYPE) * 10**log_jitter
    pop = torch.cat([torch.zeros(n_e, dtype=torch.long), torch.ones(n_i, dtype=torch.long)])
    size = torch.tensor([n_e, n_i], dtype=DTYPE)[pop]
    sign = torch.where(pop == 0, 1.0, -1.0).to(DTYPE)
    jitter = 0.5 + torch.rand(batch, n_e + n_i, n_e + n_i, generator=gen, dtype=DTYPE)
    return J[:, pop][:, :, pop] * jitter * sign / size


@dataclass
class SSNResult:
    """Final firing rates and per-circuit flags of :func:`simulate_ssn`."""

    r: Tensor
    residual: Tensor
    converged: Tensor
    diverged: Tensor
    steps: int


def simulate_ssn(
    W: Tensor,
    h: Tensor,
    tau: Tensor,
    dt: float,
    n_steps: int,
    k: float = 0.04,
    n: float = 2.0,
    tol: float = 1e-8,
    blowup: float = 1e4,
    check_every: int = 200,
) -> SSNResult:
    """Euler from r = 0; diverged = non-finite or a firing rate above ``blowup`` Hz (frozen there); stops early when
    every circuit has converged (relative residual max|τ dr/dt| / (1 + max r) < tol) or diverged."""
    r = torch.zeros_like(h)
    diverged = torch.zeros(h.shape[:-1], dtype=torch.bool)

    def res(x: Tensor) -> Tensor:
        return (ssn_vector_field(x, W, h, tau, k, n) * tau).abs().amax(-1) / (1 + x.abs().amax(-1))

    step = 0
    for step in range(1, n_steps + 1):
        r_new = r + dt * ssn_vector_field(r, W, h, tau, k, n)
        diverged |= ~torch.isfinite(r_new).all(-1) | (r_new.abs().amax(-1) > blowup)
        r = torch.where(diverged.unsqueeze(-1), r, r_new)
        if step % check_every == 0 and ((res(r) < tol) | diverged).all():
            break
    final = res(r)
    return SSNResult(r, final, (final < tol) & ~diverged, diverged, step)
