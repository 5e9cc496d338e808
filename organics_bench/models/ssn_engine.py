"""Sequence engine for the SSN: its Euler recurrence over all steps with a hand-written backward through time.

One step is u' = u + r (-u + phi(u) W^T + h_t) with firing rates phi(u) = k [u]+^p and r = dt/tau per neuron. Two
forms, same numbers as stepping `SSNCircuit.step`, to rounding:
  "auto" (default): on the CPU, fused C kernels do all steps each way, matrix products included (`ssn_fused`);
          on CUDA the torch form with each step compiled (torch.compile, where Triton is installed), its
          element-wise work fused around the matmul; elsewhere, or without a C compiler, the torch form;
  "torch": torch operations, any device. The forward pass keeps the voltages and the firing rates of every step;
          the backward pass walks the steps in reverse with one matmul each, and forms W's gradient at the end with
          one large matmul over all steps.
The voltages of every step (`ssn_scan(..., outputs=True)`) come from the torch form (compiled on CUDA), whose backward
takes their gradients at their steps; the fused C kernels return the final voltages only.
Nothing clamps u: a diverging network gives inf/NaN, as the loop does.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch.autograd.function import once_differentiable

from organics_bench.models import ssn_fused
from organics_bench.models.step_compiler import can_compile, compile_step

ENGINES = ("auto", "torch")


def checked_engine(engine: str) -> str:
    """`engine` if it is one of ENGINES, else a ValueError."""
    if engine not in ENGINES:
        raise ValueError(f"SSN engine must be one of {ENGINES}, got {engine!r}")
    return engine


def backend(tensor: torch.Tensor, engine: str = "auto") -> str:
    """How the engine runs on this tensor's device and dtype: "cpu-kernels", "compiled" (CUDA) or "torch"."""
    if checked_engine(engine) == "torch":
        return "torch"
    if ssn_fused.available(tensor):
        return "cpu-kernels"
    return "compiled" if tensor.is_cuda and can_compile() else "torch"


def ssn_scan(
    drives: torch.Tensor,
    state0: torch.Tensor,
    weights: torch.Tensor,
    dt_tau: torch.Tensor,
    k: float,
    power: float,
    engine: str = "auto",
    outputs: bool = False,
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """(voltages after every step or None, final voltages) after len(drives) Euler steps.

    Args:
        drives: (time, batch, n) input drives h_t. state0: (batch, n) initial voltages. weights: (n, n) signed W.
        dt_tau: (n,) fixed rates r. k, power: the rate nonlinearity phi(u) = k [u]+^power (power >= 1).
        engine: "auto" or "torch" (module docstring).
        outputs: also return the voltages after every step, (time, batch, n), entry t the state after step t.
    """
    name = backend(drives, engine)
    if name == "cpu-kernels" and not outputs:
        return None, ssn_fused.fused_scan(drives, drives.shape[0], state0, weights, dt_tau, k, power)
    return _torch_scan(drives, state0, weights, dt_tau, k, power, _steps(name), outputs)


def ssn_settle(
    drive: torch.Tensor,
    steps: int,
    state0: torch.Tensor,
    weights: torch.Tensor,
    dt_tau: torch.Tensor,
    k: float,
    power: float,
    engine: str = "auto",
) -> torch.Tensor:
    """Final voltages after `steps` Euler steps under a constant drive (batch, n); otherwise as `ssn_scan`."""
    name = backend(drive, engine)
    if name == "cpu-kernels":
        return ssn_fused.fused_scan(drive, steps, state0, weights, dt_tau, k, power)
    return _torch_scan(drive.expand(steps, *drive.shape), state0, weights, dt_tau, k, power, _steps(name), False)[1]


def _torch_scan(drives, state0, weights, dt_tau, k, power, steps, outputs):
    """The torch form, (voltages after every step if `outputs` else None, final voltages); a stride-0 time axis, for a
    constant drive, is fine."""
    if torch.is_grad_enabled() and any(t.requires_grad for t in (drives, state0, weights)):
        result = _SSNScan.apply(drives, state0, weights, dt_tau, k, power, steps, outputs)
        return result if outputs else (None, result)
    phi = torch.empty_like(state0)
    if not outputs:
        u = state0.clone()
        for h in drives:
            steps.forward(u, h, phi, u, weights, dt_tau, k, power)
        return None, u
    voltages = state0.new_empty(drives.shape[0], *state0.shape)
    for t, h in enumerate(drives):
        steps.forward(voltages[t - 1] if t else state0, h, phi, voltages[t], weights, dt_tau, k, power)
    return voltages, (voltages[-1].clone() if len(drives) else state0.clone())


def _forward_step(u, h, phi_out, u_next, weights, dt_tau, k, power) -> None:
    """u_next = u + r (-u + phi(u) W^T + h), writing phi(u) into phi_out; u_next may be u."""
    phi = u.clamp_min(0.0).pow(power) * k
    phi_out.copy_(phi)
    u_next.copy_(torch.addcmul(u, phi @ weights.T + h - u, dt_tau))


def _backward_step(grad, u, grad_drive, weights, dt_tau, k, power) -> None:
    """Through one step: grad (dL/du_{t+1} in, dL/du_t out) and grad_drive = dL/dh_t = dL/du_{t+1} r."""
    gf = grad * dt_tau
    slope = torch.where(u > 0, u.pow(power - 1) * (k * power), 0.0)  # phi'(u)
    grad_drive.copy_(gf)
    grad.copy_(grad - gf + (gf @ weights) * slope)


class _TorchSteps:
    """Steps written as torch operations: any device."""

    forward = staticmethod(_forward_step)
    backward = staticmethod(_backward_step)


@lru_cache(maxsize=1)
def compiled_steps() -> _TorchSteps:
    """The torch steps compiled with torch.compile (one graph per step, recompiled per shape)."""
    steps = _TorchSteps()
    steps.forward = compile_step(_forward_step)
    steps.backward = compile_step(_backward_step)
    return steps


def _steps(name: str) -> _TorchSteps:
    return compiled_steps() if name == "compiled" else _TorchSteps()


class _SSNScan(torch.autograd.Function):
    """The torch form with its backward through time. Returns the final voltages, or (voltages after every step,
    final voltages) with `outputs`."""

    @staticmethod
    def forward(ctx, drives, state0, weights, dt_tau, k, power, steps, outputs):
        n_steps = drives.shape[0]
        states = state0.new_empty(n_steps + 1, *state0.shape)
        phis = state0.new_empty(n_steps, *state0.shape)
        states[0] = state0
        for t in range(n_steps):
            steps.forward(states[t], drives[t], phis[t], states[t + 1], weights, dt_tau, k, power)
        ctx.k, ctx.power, ctx.steps = k, power, steps
        ctx.save_for_backward(states, phis, weights, dt_tau)
        if not outputs:
            return states[-1].clone()
        ctx.set_materialize_grads(False)
        return states[1:].clone(), states[-1].clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, *grads):
        states, phis, weights, dt_tau = ctx.saved_tensors
        grad_outputs, grad_final = grads if len(grads) == 2 else (None, grads[0])
        grad_drives = torch.empty_like(phis)
        grad = torch.zeros_like(states[-1]) if grad_final is None else grad_final.contiguous().clone()
        for t in reversed(range(phis.shape[0])):
            if grad_outputs is not None:  # the output of step t is the state after it, whose gradient grad is
                grad += grad_outputs[t]
            ctx.steps.backward(grad, states[t], grad_drives[t], weights, dt_tau, ctx.k, ctx.power)
        grad_weights = grad_drives.reshape(-1, grad.shape[-1]).T @ phis.reshape(-1, grad.shape[-1])
        return grad_drives, grad, grad_weights, None, None, None, None, None
