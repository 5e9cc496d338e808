"""Sequence engine for the ORGaNICs cell: the Euler recurrence over all steps with a hand-written backward through time.

Writing the derivative as f = h(state, drive) - state, one step is state + rates * f with
h = [b z + (1 - sqrt[a]+) R(y),  (b0 sigma)^2 + ([y]+^2 [a]+) W^T,  sigmoid(gate drive + [y, a] G^T)].
The forward pass keeps per step only the state, h and R(y); the backward pass walks the steps in reverse doing only
the products that carry the gradient to the previous state, and forms each weight's gradient at the end with one
large matrix multiply over all steps. Equations and state layout: `organics_bench.models.organics`.

Every per-step result goes into buffers allocated once per shape and kept for later calls (a pool of two): writing
freshly allocated memory at every step costs page faults (about 15% of the engine's time on a 2-core CPU). A
forward's buffers return to the pool after its backward, so a second backward through one graph is refused.

`recurrence` names the form of R(y): "identity" ([y]+), "linear" ([y]+ R^T) or "rectified" ([y R^T]+).
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch.autograd.function import once_differentiable

_sigmoid_backward = torch.ops.aten.sigmoid_backward
_threshold_backward = torch.ops.aten.threshold_backward
_POOL: OrderedDict[tuple, dict[str, torch.Tensor]] = OrderedDict()
_POOL_SIZE = 2  # workspaces kept for reuse: the latest shape's forward and backward ones


def organics_scan(
    drives: torch.Tensor,
    state0: torch.Tensor,
    rates: torch.Tensor,
    recurrent: torch.Tensor,
    norm: torch.Tensor,
    gate: torch.Tensor,
    sigma: torch.Tensor,
    recurrence: str,
) -> torch.Tensor:
    """Final state of the ORGaNICs recurrence: the same numbers as stepping `Organics.step`, to rounding.

    Args:
        drives: (time, batch, 3n) input projections [z, W_bx x, W_b0x x]; state0: (batch, 4n) [y, a, b, b0].
        rates: (4n,) dt/tau. recurrent: the (n, n) matrix of R(y), unused for "identity". norm: W (n, n).
        gate: (2n, 2n), maps [y, a] to the gates' pre-activations. sigma: (n,), not differentiated.
        recurrence: "identity", "linear" or "rectified" (module docstring).
    """
    args = (drives, state0, rates, recurrent, norm, gate, sigma, recurrence)
    if torch.is_grad_enabled() and any(t.requires_grad for t in args[:6]):
        return _Scan.apply(*args)
    return _forward(*args, ws=None)


def _workspace(drives: torch.Tensor, recurrence: str, backward: bool) -> dict[str, torch.Tensor]:
    """Buffers for one forward (states, h, R(y)) or one backward pass, from the pool or freshly allocated."""
    steps, batch, width = drives.shape
    n = width // 3
    key = (steps, batch, n, drives.dtype, drives.device, recurrence, backward)
    ws = _POOL.pop(key, None)
    if ws is not None:
        return ws
    shapes = {"grad": (2, batch, 4 * n), "grad_rates": (batch, 4 * n), "grad_fa": (steps, batch, n)}
    if not backward:
        shapes = {"states": (steps + 1, batch, 4 * n), "h": (steps, batch, 4 * n)}
    if recurrence != "identity":
        shapes["grad_recs" if backward else "recs"] = (steps, batch, n)
    return {name: drives.new_empty(shape) for name, shape in shapes.items()} | {"key": key}


def _release(ws: dict[str, torch.Tensor]) -> None:
    _POOL[ws["key"]] = ws
    while len(_POOL) > _POOL_SIZE:
        _POOL.popitem(last=False)


def _forward(drives, state0, rates, recurrent, norm, gate, sigma, recurrence, ws):
    """Run all steps; with a workspace keep every state, h and R(y) in it, else keep only the running state."""
    states = ws["states"] if ws else drives.new_empty(2, *state0.shape)
    h_all = ws["h"] if ws else drives.new_empty(1, *state0.shape)
    recs = ws.get("recs") if ws else None
    states[0] = state0
    for t, d in enumerate(drives):
        s, s_next = (states[t], states[t + 1]) if ws else (states[t % 2], states[(t + 1) % 2])
        h, rec = (h_all[t], None if recs is None else recs[t]) if ws else (h_all[0], None)
        _forward_step(s, d, h, rec, s_next, rates, recurrent, norm, gate, sigma, recurrence)
    return states[-1] if ws else states[len(drives) % 2].clone()


def _forward_step(s, d, h, rec_out, s_next, rates, recurrent, norm, gate, sigma, recurrence):
    """One Euler step from s into s_next, writing h (and R(y) into rec_out unless None)."""
    n = s.shape[1] // 4
    y, b, b0 = s[:, :n], s[:, 2 * n : 3 * n], s[:, 3 * n :]
    pos = s[:, : 2 * n].relu()  # [y]+, [a]+
    y_pos, a_pos = pos[:, :n], pos[:, n:]
    if recurrence == "identity":
        rec = y_pos
    elif recurrence == "rectified":
        rec = torch.mm(y, recurrent.T, out=rec_out).relu_()
    else:
        rec = torch.mm(y_pos, recurrent.T, out=rec_out)
    torch.mul(b, d[:, :n], out=h[:, :n]).addcmul_(torch.rsub(a_pos.sqrt(), 1.0), rec)
    torch.addmm((b0 * sigma).square_(), y_pos.square().mul_(a_pos), norm.T, out=h[:, n : 2 * n])
    torch.addmm(d[:, n:], s[:, : 2 * n], gate.T, out=h[:, 2 * n :]).sigmoid_()
    torch.lerp(s, h, rates, out=s_next)  # s + rates * (h - s)


class _Scan(torch.autograd.Function):
    """`organics_scan` with the backward through time written out."""

    @staticmethod
    def forward(ctx, drives, state0, rates, recurrent, norm, gate, sigma, recurrence):
        ws = _workspace(drives, recurrence, backward=False)
        final = _forward(drives, state0, rates, recurrent, norm, gate, sigma, recurrence, ws).clone()
        ctx.recurrence, ctx.ws = recurrence, ws
        ctx.save_for_backward(drives, rates, recurrent, norm, gate, sigma)
        return final

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_final):
        drives, rates, recurrent, norm, gate, sigma = ctx.saved_tensors
        recurrence, fwd = ctx.recurrence, ctx.ws
        if fwd is None:
            raise RuntimeError("the ORGaNICs engine frees its buffers after a backward; retain_graph is unsupported")
        bwd = _workspace(drives, recurrence, backward=True)
        states, h_all = fwd["states"], fwd["h"]
        n = rates.shape[0] // 4
        grad_drives = torch.empty_like(drives)
        grad_rates = bwd["grad_rates"].zero_()
        two_sigma2 = 2.0 * sigma.square()
        grad_next = grad_final
        for t in reversed(range(drives.shape[0])):
            grad = bwd["grad"][t % 2]
            rec = fwd["recs"][t] if "recs" in fwd else None
            grad_rec = bwd["grad_recs"][t] if "grad_recs" in bwd else None
            _backward_step(grad_next, states[t], h_all[t], rec, drives[t], grad, grad_drives[t], grad_rec,
                           bwd["grad_fa"][t], grad_rates, rates, recurrent, norm, gate, two_sigma2, recurrence)
            grad_next = grad
        inputs = states[:-1]
        y_all, a_all = inputs[..., :n], inputs[..., n : 2 * n]
        grad_recurrent = None
        if recurrence != "identity":
            grad_recurrent = _weight_grad(bwd["grad_recs"], y_all if recurrence == "rectified" else y_all.relu())
        grads = (
            grad_drives,
            grad_next.clone(),
            grad_rates.sum(0),
            grad_recurrent,
            _weight_grad(bwd["grad_fa"], y_all.relu().square_().mul_(a_all.relu())),
            _weight_grad(grad_drives[..., n:], inputs[..., : 2 * n]),
            None,
            None,
        )
        _release(fwd)
        _release(bwd)
        ctx.ws = None
        return grads


def _backward_step(grad_next, s, h, rec, d, grad, grad_d, grad_rec, grad_fa, grad_rates, rates, recurrent, norm, gate,
                   two_sigma2, recurrence):
    """Gradient through one step: grad of s from grad_next; writes grad_d (drive), grad_rec (R's output), grad_fa
    (f_a) and adds into grad_rates."""
    n = s.shape[1] // 4
    y, a, b, b0 = s.split(n, 1)
    grad_rates.addcmul_(grad_next, h - s)
    gf = grad_next * rates  # gradient with respect to f = h - s
    gf_y, gf_a, gf_g = gf[:, :n], gf[:, n : 2 * n], gf[:, 2 * n :]
    torch.sub(grad_next, gf, out=grad)
    grad_fa.copy_(gf_a)
    pos = s[:, : 2 * n].relu()
    y_pos, a_pos = pos[:, :n], pos[:, n:]
    sqrt_a = a_pos.sqrt()
    rec = y_pos if recurrence == "identity" else rec
    # h_y = b z + (1 - sqrt[a]+) R(y)
    grad[:, 2 * n : 3 * n].addcmul_(gf_y, d[:, :n])
    torch.mul(gf_y, b, out=grad_d[:, :n])
    g_rec = torch.addcmul(gf_y, gf_y, sqrt_a, value=-1.0, out=grad_rec)
    # h_a = (b0 sigma)^2 + ([y]+^2 [a]+) W^T; [a]+ also enters h_y through sqrt
    g_u = gf_a @ norm
    grad[:, 3 * n :].addcmul_(gf_a, b0 * two_sigma2)
    g_a_pos = torch.addcdiv(g_u * y_pos.square(), gf_y * rec, sqrt_a, value=-0.5)
    if recurrence == "linear":
        g_y_pos = (g_rec @ recurrent).addcmul_(g_u, y_pos * a_pos, value=2.0)
    elif recurrence == "identity":
        g_y_pos = g_rec.addcmul_(g_u, y_pos * a_pos, value=2.0)
    else:
        _threshold_backward.grad_input(g_rec, rec, 0, grad_input=g_rec)
        grad[:, :n].addmm_(g_rec, recurrent)
        g_y_pos = g_u.mul_(y_pos * a_pos).mul_(2.0)
    grad[:, :n].add_(_threshold_backward(g_y_pos, y, 0))
    grad[:, n : 2 * n].add_(_threshold_backward(g_a_pos, a, 0))
    # h_g = sigmoid(gate drive + [y, a] G^T)
    g_gate = _sigmoid_backward.grad_input(gf_g, h[:, 2 * n :], grad_input=grad_d[:, n:])
    grad[:, : 2 * n].addmm_(g_gate, gate)


def _weight_grad(grad_out: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """Sum over steps and batch of grad_out^T inputs: the gradient of M in out = inputs M^T."""
    return grad_out.reshape(-1, grad_out.shape[-1]).T @ inputs.reshape(-1, inputs.shape[-1])
