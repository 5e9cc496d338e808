"""Continuous-time ORGaNICs: vector field, Jacobian, fixed points, simulation and samplers (docs/equations.md,
'Continuous-time circuit' and 'Stability theory').

Everything is batched over circuits: a :class:`Circuit` holds ``B`` circuits of ``n`` neurons, every tensor
has a leading batch axis, states ``y, a`` are ``(B, n)``. The functions also work on unbatched tensors
(leading axes are broadcast), which is what ``torch.func.vmap`` feeds them. Time is in ms, time derivatives and
eigenvalues in 1/ms. The equations themselves are :mod:`organics_bench.equations`.

Main model:      τ_y ẏ = -y + b⊙z + (1 - √⌊a⌋) ⊙ W_r y,    τ_a ȧ = -a + b0²σ² + W (y² ⊙ ⌊a⌋)
Rectified model: τ_y ẏ = -y + b⊙z + (1 - √⌊a⌋) ⊙ W_r ⌊y⌋,  τ_a ȧ = -a + b0²σ² + W (⌊y⌋² ⊙ ⌊a⌋)
``Wr=None`` means W_r = I.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

import torch
from torch import Tensor

from organics_bench.equations import circuit_rhs, closed_form_fixed_point, matvec

DTYPE = torch.float64


@dataclass(frozen=True)
class Circuit:
    """A batch of circuits. W, Wr: (..., n, n); b, b0, sigma, tau_y, tau_a, z: (..., n); Wr=None is identity."""

    W: Tensor
    b: Tensor
    b0: Tensor
    sigma: Tensor
    tau_y: Tensor
    tau_a: Tensor
    z: Tensor
    Wr: Tensor | None = None

    @property
    def n(self) -> int:
        return self.z.shape[-1]

    @property
    def drive(self) -> Tensor:
        """Input drive b⊙z."""
        return self.b * self.z

    @property
    def floor(self) -> Tensor:
        """Constant term of the a-equation, b0²σ²."""
        return (self.b0 * self.sigma) ** 2

    def tensors(self) -> dict[str, Tensor]:
        """The non-None fields by name."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    def select(self, idx: Tensor | slice) -> Circuit:
        """The sub-batch ``idx`` (index or boolean mask on the batch axis)."""
        return Circuit(**{k: v[idx] for k, v in self.tensors().items()})

    def with_wr(self, Wr: Tensor | None) -> Circuit:
        """The same circuits with another recurrent matrix."""
        return replace(self, Wr=Wr)


def vector_field(c: Circuit, y: Tensor, a: Tensor, rectified: bool = False) -> tuple[Tensor, Tensor]:
    """(dy/dt, da/dt) of the main or rectified model (docs/equations.md, 'Main model', 'Rectified model')."""
    dy, da = circuit_rhs(y, a, c.drive, c.floor, c.W, c.Wr, rectified)
    return dy / c.tau_y, da / c.tau_a


def residual(c: Circuit, y: Tensor, a: Tensor, rectified: bool = False) -> Tensor:
    """Per-circuit ODE residual max|τ ⊙ dx/dt| / (1 + max|x|): zero exactly at a fixed point."""
    dy, da = vector_field(c, y, a, rectified)
    r = torch.cat([(c.tau_y * dy).abs(), (c.tau_a * da).abs()], -1).amax(-1)
    return r / (1 + torch.cat([y.abs(), a.abs()], -1).amax(-1))


def jacobian(c: Circuit, y: Tensor, a: Tensor, rectified: bool = False) -> Tensor:
    """Analytic Jacobian of the vector field w.r.t. (y, a), shape (..., 2n, 2n) (docs/equations.md, 'Jacobian at
    the fixed point')."""
    n = c.n
    eye = torch.eye(n, dtype=y.dtype, device=y.device)
    a_pos = a.clamp_min(0)
    s = a_pos.sqrt()
    a_on = (a > 0).to(y.dtype)
    yr = y.clamp_min(0) if rectified else y
    dyr = (y > 0).to(y.dtype) if rectified else torch.ones_like(y)
    R = eye.expand(*y.shape[:-1], n, n) if c.Wr is None else c.Wr
    inv_ty = (1 / c.tau_y).unsqueeze(-1)
    inv_ta = (1 / c.tau_a).unsqueeze(-1)
    j11 = inv_ty * (-eye + (1 - s).unsqueeze(-1) * R * dyr.unsqueeze(-2))
    dsqrt = torch.where(a > 0, -0.5 / s.clamp_min(torch.finfo(y.dtype).tiny), torch.zeros_like(s))
    j12 = inv_ty * torch.diag_embed(matvec(R, yr) * dsqrt)
    j21 = inv_ta * c.W * (2 * yr * a_pos).unsqueeze(-2)
    j22 = inv_ta * (-eye + c.W * (yr**2 * a_on).unsqueeze(-2))
    return torch.cat([torch.cat([j11, j12], -1), torch.cat([j21, j22], -1)], -2)


def jacobian_autograd(c: Circuit, y: Tensor, a: Tensor, rectified: bool = False) -> Tensor:
    """The same Jacobian by ``torch.func.jacrev`` of the vector field, vmapped over the batch."""
    names = list(c.tensors())
    n = c.n

    def flat_field(x: Tensor, *values: Tensor) -> Tensor:
        dy, da = vector_field(Circuit(**dict(zip(names, values))), x[:n], x[n:], rectified)
        return torch.cat([dy, da])

    jac = torch.func.vmap(torch.func.jacrev(flat_field))
    return jac(torch.cat([y, a], -1), *c.tensors().values())


def eigvals(J: Tensor) -> Tensor:
    """Eigenvalues of a batch of matrices (LAPACK geev, balanced).

    Runs single-threaded: on this project's 2-core CPUs multi-threaded MKL geev was measured 50x slower.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return torch.linalg.eigvals(J)
    finally:
        torch.set_num_threads(threads)


def max_real_eig(J: Tensor) -> Tensor:
    """max Re λ(J) per matrix."""
    return eigvals(J).real.amax(-1)


def fixed_point_identity(c: Circuit, rectified: bool = False) -> tuple[Tensor, Tensor]:
    """Closed-form normalization fixed point for W_r = I: a_s = b0²σ² + W (b z)², y_s = b z / √a_s
    (:func:`organics_bench.equations.closed_form_fixed_point`)."""
    return closed_form_fixed_point(c.drive, c.floor, c.W, rectified=rectified)


@dataclass
class Trajectory:
    """Result of :func:`simulate`: final state, per-circuit flags and an optional recorded path."""

    y: Tensor
    a: Tensor
    residual: Tensor
    converged: Tensor
    diverged: Tensor
    steps: int
    t: Tensor | None = None
    ys: Tensor | None = None
    as_: Tensor | None = None


def _step(c: Circuit, y: Tensor, a: Tensor, dt: Tensor, rectified: bool, method: str) -> tuple[Tensor, Tensor]:
    def f(yy: Tensor, aa: Tensor) -> tuple[Tensor, Tensor]:
        return vector_field(c, yy, aa, rectified)

    k1 = f(y, a)
    if method == "euler":
        return y + dt * k1[0], a + dt * k1[1]
    if method != "rk4":
        raise ValueError(f"unknown method {method!r}")
    k2 = f(y + dt / 2 * k1[0], a + dt / 2 * k1[1])
    k3 = f(y + dt / 2 * k2[0], a + dt / 2 * k2[1])
    k4 = f(y + dt * k3[0], a + dt * k3[1])
    return (y + dt / 6 * (k1[0] + 2 * k2[0] + 2 * k3[0] + k4[0]), a + dt / 6 * (k1[1] + 2 * k2[1] + 2 * k3[1] + k4[1]))


def simulate(
    c: Circuit,
    y0: Tensor,
    a0: Tensor,
    dt: float | Tensor,
    n_steps: int,
    rectified: bool = False,
    tol: float = 1e-10,
    check_every: int = 100,
    record_every: int | None = None,
    method: str = "euler",
    blowup: float = 1e8,
) -> Trajectory:
    """Integrate all circuits at once (explicit Euler by default; ``dt`` a float or per-circuit (B, 1) in ms).

    Stops early once every circuit has ``residual < tol`` or has diverged (non-finite or |x| > ``blowup``);
    diverged circuits are frozen at their last finite state. With ``record_every`` the path is kept.
    """
    dt = torch.as_tensor(dt, dtype=y0.dtype)
    dt_per_circuit = (dt.squeeze(-1) if dt.ndim else dt).expand(y0.shape[:-1])
    y, a = y0.clone(), a0.clone()
    diverged = torch.zeros(y.shape[:-1], dtype=torch.bool)
    rec_t, rec_y, rec_a = [], [], []
    step = 0
    for step in range(1, n_steps + 1):
        if record_every and (step - 1) % record_every == 0:
            rec_t.append((step - 1) * dt_per_circuit)
            rec_y.append(y.clone())
            rec_a.append(a.clone())
        y_new, a_new = _step(c, y, a, dt, rectified, method)
        bad = ~(torch.isfinite(y_new).all(-1) & torch.isfinite(a_new).all(-1)) | (
            torch.cat([y_new, a_new], -1).abs().amax(-1) > blowup
        )
        diverged |= bad
        keep = diverged.unsqueeze(-1)
        y, a = torch.where(keep, y, y_new), torch.where(keep, a, a_new)
        if step % check_every == 0 and not record_every:
            if ((residual(c, y, a, rectified) < tol) | diverged).all():
                break
    res = residual(c, y, a, rectified)
    traj = Trajectory(y, a, res, (res < tol) & ~diverged, diverged, step)
    if record_every:
        traj.t, traj.ys, traj.as_ = torch.stack(rec_t, -1), torch.stack(rec_y, -2), torch.stack(rec_a, -2)
    return traj


def newton_polish(c: Circuit, y: Tensor, a: Tensor, rectified: bool = False, n_iter: int = 8) -> tuple[Tensor, Tensor]:
    """Refine approximate fixed points to machine precision with Newton steps on the analytic Jacobian."""
    n = c.n
    for _ in range(n_iter):
        dy, da = vector_field(c, y, a, rectified)
        delta = torch.linalg.solve(jacobian(c, y, a, rectified), -torch.cat([dy, da], -1))
        y, a = y + delta[..., :n], a + delta[..., n:]
    return y, a


def _log_uniform(shape: tuple[int, ...], lo: float, hi: float, gen: torch.Generator) -> Tensor:
    return 10 ** (math.log10(lo) + (math.log10(hi) - math.log10(lo)) * torch.rand(shape, generator=gen, dtype=DTYPE))


def sample_broad(
    batch: int,
    n: int,
    gen: torch.Generator,
    gain_range: tuple[float, float] = (0.1, 10.0),
    tau_range: tuple[float, float] = (1.0, 100.0),
    w_scales: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0),
    z_range: tuple[float, float] = (0.01, 10.0),
) -> Circuit:
    """Broad random W_r = I circuits for the unconditional-stability sweep (docs/equations.md, 'Jacobian at the
    fixed point').

    Per neuron: b, b0, σ log-uniform in ``gain_range``; τ_y, τ_a log-uniform in ``tau_range`` (ms).
    Per circuit: W = scale · U(0,1) · Bernoulli(density) with scale drawn from ``w_scales`` and density ~ U(0,1);
    z = N(0,1) · scale with scale log-uniform in ``z_range`` (any sign).
    """
    shape = (batch, n)
    scale = torch.tensor(w_scales, dtype=DTYPE)[torch.randint(len(w_scales), (batch,), generator=gen)]
    density = torch.rand(batch, 1, 1, generator=gen, dtype=DTYPE)
    mask = (torch.rand(batch, n, n, generator=gen, dtype=DTYPE) < density).to(DTYPE)
    W = scale[:, None, None] * torch.rand(batch, n, n, generator=gen, dtype=DTYPE) * mask
    z = torch.randn(shape, generator=gen, dtype=DTYPE) * _log_uniform((batch, 1), *z_range, gen)

    def g(rng: tuple[float, float]) -> Tensor:
        return _log_uniform(shape, *rng, gen)

    return Circuit(
        W=W, b=g(gain_range), b0=g(gain_range), sigma=g(gain_range), tau_y=g(tau_range), tau_a=g(tau_range), z=z
    )


def sample_unit(batch: int, n: int, gen: torch.Generator, wr_bound: float | None = 1.0, tau: float = 2.0) -> Circuit:
    """The Fig. 4 / conjecture protocol (docs/equations.md, 'Convergence test (Fig. 4)', 'Generic W_r conjecture'):
    b, b0, σ ~ U(0,1)^n, τ = 2 ms, W ~ U(0,1)^{n×n}, z = g/‖g‖, and W_r = s·G/σ_max(G) with G ~ N(0,1) and
    s = ``wr_bound`` (None: W_r = I)."""

    def u(*shape: int) -> Tensor:
        return torch.rand(*shape, generator=gen, dtype=DTYPE)

    b0, b, sigma, W = u(batch, n), u(batch, n), u(batch, n), u(batch, n, n)
    g = torch.randn(batch, n, generator=gen, dtype=DTYPE)
    Wr = None
    if wr_bound is not None:
        G = torch.randn(batch, n, n, generator=gen, dtype=DTYPE)
        Wr = wr_bound * G / torch.linalg.matrix_norm(G, ord=2)[:, None, None]
    t = torch.full((batch, n), tau, dtype=DTYPE)
    return Circuit(W=W, b=b, b0=b0, sigma=sigma, tau_y=t, tau_a=t.clone(), z=g / g.norm(dim=-1, keepdim=True), Wr=Wr)
