"""Sequence engine for the SSN: its Euler recurrence over all steps with a hand-written backward through time.

One step is u' = u + r (-u + phi(u) W^T + h_t) with rates phi(u) = k [u]+^p and r = dt/tau per neuron. Two forms,
same numbers as stepping `SSNCircuit.step`, to rounding:
  "auto" (default): on the CPU, fused C kernels do all steps each way, matrix products included (`ssn_fused`);
          elsewhere, or without a C compiler, the torch form;
  "torch": torch operations, any device. The forward pass keeps the voltages and the rates of every step; the
          backward pass walks the steps in reverse with one matmul each, and forms W's gradient at the end with one
          large matmul over all steps.
Nothing clamps u: a diverging network gives inf/NaN, as the loop does.
"""
from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from organics_bench.models import ssn_fused

ENGINES = ("auto", "torch")


def checked_engine(engine: str) -> str:
    """`engine` if it is one of ENGINES, else a ValueError."""
    if engine not in ENGINES:
        raise ValueError(f"SSN engine must be one of {ENGINES}, got {engine!r}")
    return engine


def backend(tensor: torch.Tensor, engine: str = "auto") -> str:
    """How the engine runs on this tensor's device and dtype: "cpu-kernels" or "torch"."""
    return "cpu-kernels" if checked_engine(engine) == "auto" and ssn_fused.available(tensor) else "torch"


def ssn_scan(drives: torch.Tensor, state0: torch.Tensor, weights: torch.Tensor, dt_tau: torch.Tensor, k: float,
             power: float, engine: str = "auto") -> torch.Tensor:
    """Final voltages after len(drives) Euler steps.

    Args:
        drives: (time, batch, n) input drives h_t. state0: (batch, n) initial voltages. weights: (n, n) signed W.
        dt_tau: (n,) fixed rates r. k, power: the rate nonlinearity phi(u) = k [u]+^power (power >= 1).
        engine: "auto" or "torch" (module docstring).
    """
    if backend(drives, engine) == "cpu-kernels":
        return ssn_fused.fused_scan(drives, drives.shape[0], state0, weights, dt_tau, k, power)
    return _torch_scan(drives, state0, weights, dt_tau, k, power)


def ssn_settle(drive: torch.Tensor, steps: int, state0: torch.Tensor, weights: torch.Tensor, dt_tau: torch.Tensor,
               k: float, power: float, engine: str = "auto") -> torch.Tensor:
    """Final voltages after `steps` Euler steps under a constant drive (batch, n); otherwise as `ssn_scan`."""
    if backend(drive, engine) == "cpu-kernels":
        return ssn_fused.fused_scan(drive, steps, state0, weights, dt_tau, k, power)
    return _torch_scan(drive.expand(steps, *drive.shape), state0, weights, dt_tau, k, power)


def _torch_scan(drives, state0, weights, dt_tau, k, power):
    """The torch form; a stride-0 time axis, for a constant drive, is fine."""
    if torch.is_grad_enabled() and any(t.requires_grad for t in (drives, state0, weights)):
        return _SSNScan.apply(drives, state0, weights, dt_tau, k, power)
    u, phi, tmp = state0.clone(), torch.empty_like(state0), torch.empty_like(state0)
    for h in drives:
        _step(u, h, phi, tmp, u, weights, dt_tau, k, power)
    return u


def _step(u, h, phi_out, tmp, u_next, weights, dt_tau, k, power) -> None:
    """u_next = u + r (-u + phi(u) W^T + h), writing phi(u) into phi_out; u_next may be u."""
    torch.clamp_min(u, 0.0, out=phi_out).pow_(power).mul_(k)
    torch.mm(phi_out, weights.T, out=tmp).add_(h).sub_(u)
    torch.addcmul(u, tmp, dt_tau, out=u_next)


class _SSNScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, drives, state0, weights, dt_tau, k, power):
        steps = drives.shape[0]
        states = state0.new_empty(steps + 1, *state0.shape)
        phis = state0.new_empty(steps, *state0.shape)
        tmp = torch.empty_like(state0)
        states[0] = state0
        for t in range(steps):
            _step(states[t], drives[t], phis[t], tmp, states[t + 1], weights, dt_tau, k, power)
        ctx.k, ctx.power = k, power
        ctx.save_for_backward(states, phis, weights, dt_tau)
        return states[-1].clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_final):
        states, phis, weights, dt_tau = ctx.saved_tensors
        k, power = ctx.k, ctx.power
        grad_drives = torch.empty_like(phis)
        grad = grad_final.contiguous().clone()
        for t in reversed(range(phis.shape[0])):
            gf = torch.mul(grad, dt_tau, out=grad_drives[t])  # dL/dh_t = dL/du_{t+1} r
            u = states[t]
            slope = torch.where(u > 0, u.pow(power - 1) * (k * power), 0.0)  # phi'(u)
            grad.sub_(gf).addcmul_(gf @ weights, slope)
        grad_weights = grad_drives.reshape(-1, grad.shape[-1]).T @ phis.reshape(-1, grad.shape[-1])
        return grad_drives, grad, grad_weights, None, None, None
