"""The SSN engine on the CPU: all Euler steps and the backward through them in two calls of fused C kernels
(`ssn_kernels.c`, built once per machine by `cpu_kernels`), matrix products included.

The kernels take a block of batch rows through every step at once, so per step nothing leaves the cache but the
voltages kept for the backward; a constant drive (the static SSN) is read once per step and its gradient summed in
place. The kept voltages live in a pooled buffer (fresh memory costs page faults at every call); it returns to the
pool after the backward, so a second backward through one graph is refused.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from organics_bench.models import cpu_kernels

KERNELS = "ssn_kernels"
_POOL: dict[tuple, torch.Tensor] = {}
_POOL_SIZE = 2  # kept buffers: the training batch's and the last, smaller one's


def available(tensor: torch.Tensor) -> bool:
    """Whether the kernels run on this tensor's device and dtype (building them if needed)."""
    return cpu_kernels.available(tensor, KERNELS)


def fused_scan(
    drive: torch.Tensor,
    steps: int,
    state0: torch.Tensor,
    weights: torch.Tensor,
    dt_tau: torch.Tensor,
    k: float,
    power: float,
) -> torch.Tensor:
    """Final voltages after `steps` Euler steps, as `ssn_engine.ssn_scan` computes them.

    Args:
        drive: (steps, batch, n) drives h_t, or (batch, n) for a drive constant in time.
        state0: (batch, n) initial voltages. weights: (n, n) signed W. dt_tau: (n,) fixed rates dt/tau, not
        differentiated. k, power: the firing-rate nonlinearity k [u]+^power.
    """
    if any(t.dtype != drive.dtype for t in (state0, weights, dt_tau)):
        raise TypeError("SSN engine: drive, state0, weights and dt_tau must share one dtype")
    args = (drive.contiguous(), state0.contiguous(), weights.contiguous(), dt_tau.contiguous(), k, power, steps)
    if torch.is_grad_enabled() and any(t.requires_grad for t in (drive, state0, weights)):
        return _FusedScan.apply(*args)
    return _forward(*args, keep=False)[0]


def _forward(drive, state0, weights, dt_tau, k, power, steps, keep):
    """(final voltages, the kept voltages of every step or None)."""
    lib = cpu_kernels.load(drive.dtype, KERNELS)
    batch, n = state0.shape
    w_t = _packed(weights.T, lib)
    saved = _take((steps + 1) * batch * n, state0) if keep else None
    out = state0.new_empty(batch, n)
    h_step = 0 if drive.dim() == 2 else batch * n
    status = lib.ssn_forward(
        steps,
        batch,
        n,
        w_t.data_ptr(),
        drive.data_ptr(),
        h_step,
        dt_tau.data_ptr(),
        k,
        power,
        state0.data_ptr(),
        None if saved is None else saved.data_ptr(),
        out.data_ptr(),
    )
    if status:
        raise MemoryError("SSN engine: out of memory for the kernels' scratch buffers")
    return out, saved


def _packed(matrix: torch.Tensor, lib) -> torch.Tensor:
    """matrix (n, n) with its rows zero-padded to the kernels' vector width."""
    n = matrix.shape[0]
    packed = matrix.new_zeros(n, lib.ssn_padded(n))
    packed[:, :n] = matrix
    return packed


def _take(numel: int, like: torch.Tensor) -> torch.Tensor:
    key = (numel, like.dtype)
    return _POOL.pop(key) if key in _POOL else like.new_empty(numel)


def _release(buffer: torch.Tensor) -> None:
    _POOL[(buffer.numel(), buffer.dtype)] = buffer
    while len(_POOL) > _POOL_SIZE:
        _POOL.pop(next(iter(_POOL)))


class _FusedScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, drive, state0, weights, dt_tau, k, power, steps):
        out, ctx.kept = _forward(drive, state0, weights, dt_tau, k, power, steps, keep=True)
        ctx.k, ctx.power, ctx.steps, ctx.constant = k, power, steps, drive.dim() == 2
        ctx.save_for_backward(weights, dt_tau)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        if ctx.kept is None:
            raise RuntimeError("the SSN engine frees its buffers after a backward; retain_graph is unsupported")
        weights, dt_tau = ctx.saved_tensors
        lib = cpu_kernels.load(weights.dtype, KERNELS)
        batch, n = grad_out.shape
        grad_drive = grad_out.new_empty((batch, n) if ctx.constant else (ctx.steps, batch, n))
        grad_state0, grad_weights = torch.empty_like(grad_out), torch.empty_like(weights)
        w_p, grad_out = _packed(weights, lib), grad_out.contiguous()  # held: the kernel gets bare pointers
        status = lib.ssn_backward(
            ctx.steps,
            batch,
            n,
            w_p.data_ptr(),
            ctx.kept.data_ptr(),
            dt_tau.data_ptr(),
            ctx.k,
            ctx.power,
            grad_out.data_ptr(),
            grad_drive.data_ptr(),
            0 if ctx.constant else batch * n,
            grad_state0.data_ptr(),
            grad_weights.data_ptr(),
        )
        if status:
            raise MemoryError("SSN engine: out of memory for the kernels' scratch buffers")
        _release(ctx.kept)
        ctx.kept = None
        return grad_drive, grad_state0, grad_weights, None, None, None, None
