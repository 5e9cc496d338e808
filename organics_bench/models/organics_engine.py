"""Sequence engine for the ORGaNICs cell: the Euler recurrence over all steps with a hand-written backward through time.

Writing the derivative as f = h(state, drive) - state, one step is state + rates * f with
h = [b z + (1 - sqrt[a]+) R(y),  (b0 sigma)^2 + ([y]+^2 [a]+) W^T,  sigmoid(gate drive + [y, a] G^T)].
The forward pass projects all inputs at once and keeps per step only the drives, state, h and R(y); the backward
pass walks the steps in reverse doing only the products that carry the gradient to the previous state, and adds each
step's share to the weight gradients while its operands are still in cache. Equations and state layout:
`organics_bench.models.organics`.

Every buffer is allocated once per shape and kept for later calls (a pool of two workspaces): writing freshly
allocated memory costs page faults, and per-step activations written out and read back cost memory bandwidth, the
two things that bound the engine beside its matrix multiplies on a CPU. A forward's buffers return to the pool after
its backward, so a second backward through one graph is refused.

On the CPU the element-wise work of each step runs in fused C kernels (`organics_kernels.c`, built once per machine
by `cpu_kernels`): per step, two passes over memory each way around the matmuls (three forward; backward, three
for the state's gradient and three or four adding into weight gradients) instead of about forty torch operations.
Elsewhere (CUDA), or where no C compiler works, the same steps run as torch operations.

R(y) is [y]+ when no recurrent matrix R is given (W_r = I), else [y]+ R^T, or [y R^T]+ with `rectify_recurrence`.

On CUDA the same torch steps run compiled (`step_compiler`, `compiled_steps`): each step's element-wise work fuses into
a few kernels around its matrix products, instead of about forty launches per step.

On the CPU the whole time loop runs natively where the C++ operators build (`native_ops`, `organics_native.cpp`):
one call for all forward steps and one for the whole backward through time, the same C kernels and BLAS products
per step with no Python between them, the batch split across torch's threads. It forms each step's drives in the
loop (both ways) instead of keeping them, which saves a (time, batch, 3n) array written once and read twice. The
per-step Python loop above stays selectable as the reference (backend "cpu-kernels").

With `outputs`, every backend also returns y after every step (what `ORGaNICsLayer` outputs), copied out of the
workspace so that no later call overwrites them, and its backward adds their gradients in at their steps. Without
gradients the native loop then runs up to _CHUNK steps per call, keeping those steps' states, instead of two rolling
states.
"""

from __future__ import annotations

from collections import OrderedDict
from functools import lru_cache

import torch
from torch.autograd.function import once_differentiable

from organics_bench.models import cpu_kernels, native_ops
from organics_bench.models.step_compiler import can_compile, compile_step

_sigmoid_backward = torch.ops.aten.sigmoid_backward
_threshold_backward = torch.ops.aten.threshold_backward
_POOL: OrderedDict[tuple, dict[str, torch.Tensor]] = OrderedDict()
_POOL_SIZE = 2  # workspaces kept for reuse: the latest shape's forward and backward ones
_CHUNK = 64  # steps per native call in a no-grad forward that keeps y at every step
BACKENDS = ("native", "cpu-kernels", "compiled", "torch")
ENGINES = ("auto", "native", "stepped")


def organics_scan(
    inputs: torch.Tensor,
    input_weights: torch.Tensor,
    rectify_input: bool,
    state0: torch.Tensor,
    rates: torch.Tensor,
    recurrent: torch.Tensor | None,
    norm: torch.Tensor,
    gate: torch.Tensor,
    sigma: torch.Tensor,
    rectify_recurrence: bool,
    engine: str = "auto",
    outputs: bool = False,
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """(y at every step or None, final state) of the ORGaNICs recurrence: the same numbers as stepping
    `ORGaNICsLayer.step`, to rounding.

    Args:
        inputs: (time, batch, m) the sequence x. input_weights: (3n, m) [W_zx; W_bx; W_b0x], so that the drives are
            [z, W_bx x, W_b0x x] = x input_weights^T, with z rectified if `rectify_input`.
        state0: (batch, 4n) [y, a, b, b0]. rates: (4n,) dt/tau. recurrent: the (n, n) matrix R of R(y), or None
            for R(y) = [y]+. norm: W (n, n). gate: (2n, 2n), maps [y, a] to the gates' pre-activations.
        sigma: (n,), not differentiated. rectify_recurrence: R(y) = [y R^T]+ instead of [y]+ R^T.
        engine: "auto" (the fastest backend here), "native" (the native time loop) or "stepped" (steps driven from
            Python: the C kernels on the CPU, compiled or plain torch steps elsewhere); `backend` says which runs.
        outputs: also return y after every step, (time, batch, n): entry t is y_{t+1}, the first n entries of the
            state after step t. Their gradients enter the backward through time at their steps.
    """
    name = backend(inputs, engine)
    rectified = rectify_recurrence and recurrent is not None
    args = (inputs, input_weights, state0, rates.contiguous(), recurrent, norm, gate, sigma.contiguous())
    grad_needed = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in args[:7])
    if name == "native":
        native_args = (inputs.contiguous(), input_weights.contiguous(), state0, *_contiguous(args[3:]))
        if grad_needed:
            return _split(_NativeScan.apply(*native_args, rectified, rectify_input, outputs), outputs)
        return _native_forward(*native_args, rectified, rectify_input, outputs)
    steps = step_functions(name, inputs.dtype)
    if grad_needed:
        return _split(_Scan.apply(*args, rectified, rectify_input, steps, outputs), outputs)
    drives = _project(inputs, input_weights, rectify_input)
    ys = inputs.new_empty(*inputs.shape[:2], state0.shape[1] // 4) if outputs else None
    return ys, _forward(drives, *args[2:], rectified, steps, ws=None, outputs=ys)


def _split(result, outputs: bool) -> tuple[torch.Tensor | None, torch.Tensor]:
    """(outputs or None, final state) from a scan Function's result: (outputs, final) or final alone."""
    return result if outputs else (None, result)


def _step_outputs(states: torch.Tensor) -> torch.Tensor:
    """y after every step, (time, batch, n), copied out of a workspace's states (time + 1, batch, 4n)."""
    return states[1:, :, : states.shape[2] // 4].clone(memory_format=torch.contiguous_format)


def backend(tensor: torch.Tensor, engine: str = "auto") -> str:
    """How `engine` runs on this tensor's device and dtype, one of BACKENDS: on the CPU the native time loop (unless
    engine="stepped"), else the fused C kernels stepped from Python; compiled torch steps on CUDA (where Triton is
    installed); else torch operations."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if engine == "native":
        native_ops.require()
        return "native"
    if engine == "auto" and native_ops.available(tensor):
        return "native"
    if cpu_kernels.available(tensor):
        return "cpu-kernels"
    return "compiled" if tensor.is_cuda and can_compile() else "torch"


def _contiguous(tensors):
    return tuple(None if t is None else t.contiguous() for t in tensors)


def step_functions(name: str, dtype: torch.dtype) -> _KernelSteps | _TorchSteps:
    """The step implementation called `name` (one of BACKENDS)."""
    if name == "cpu-kernels":
        return _KernelSteps(dtype)
    return compiled_steps() if name == "compiled" else _TorchSteps()


def _project(
    inputs: torch.Tensor, input_weights: torch.Tensor, rectify: bool, out: torch.Tensor | None = None
) -> torch.Tensor:
    """The drives x input_weights^T, (time, batch, 3n), with [z]+ if `rectify`; into `out` when given."""
    m = inputs.shape[-1]
    drives = out if out is not None else inputs.new_empty(*inputs.shape[:-1], input_weights.shape[0])
    torch.mm(inputs.reshape(-1, m), input_weights.T, out=drives.view(-1, drives.shape[-1]))
    if rectify:
        drives[..., : input_weights.shape[0] // 3].relu_()
    return drives


def _workspace(
    steps: int, batch: int, n: int, like: torch.Tensor, has_matrix: bool, backward: bool, drives: bool = True
) -> dict[str, torch.Tensor]:
    """Buffers for one forward or one backward pass, from the pool or freshly allocated. A forward keeps per step the
    state, h, R(y) (unless R(y) = [y]+) and, with `drives` (not the native loop, which forms them per step), the
    drives; everything else, and all of a backward, lives one step at a time."""
    key = (steps, batch, n, like.dtype, like.device, has_matrix, backward, drives)
    ws = _POOL.pop(key, None)
    if ws is not None:
        return ws
    # "inputs" holds what the matmuls of W and R take, u = [y]+^2 [a]+ and [y]+; "products" the backward's gf_a W, g R
    shapes = {"inputs": (2, batch, n)}
    if backward:
        shapes |= {
            "grad": (2, batch, 4 * n),
            "grad_drives": (batch, 3 * n),
            "grad_fa": (batch, n),
            "products": (2, batch, n),
        }
        if has_matrix:
            shapes["grad_rec"] = (batch, n)
    else:
        shapes |= {"states": (steps + 1, batch, 4 * n), "h": (steps, batch, 4 * n)}
        if drives:
            shapes["drives"] = (steps, batch, 3 * n)
        if has_matrix:
            shapes["recs"] = (steps, batch, n)
    buffers = {name: like.new_empty(shape) for name, shape in shapes.items()}
    if backward:  # dL/d rates summed over steps and batch, in float64 (200k terms at the paper's shape)
        buffers["grad_rates"] = like.new_empty(4 * n, dtype=torch.float64)
    return buffers | {"key": key}


def _release(ws: dict[str, torch.Tensor]) -> None:
    _POOL[ws["key"]] = ws
    while len(_POOL) > _POOL_SIZE:
        _POOL.popitem(last=False)


def _forward(drives, state0, rates, recurrent, norm, gate, sigma, rectified, steps, ws, outputs=None):
    """Run all steps; with a workspace keep what the backward needs in it, else keep only the running state (and y
    after every step in `outputs`, (time, batch, n), when given)."""
    rolling = ws is None
    if rolling:  # one step's buffers (two states), reused at every step
        ws = _workspace(1, state0.shape[0], state0.shape[1] // 4, drives, recurrent is not None, backward=False)
    states, (u, y_pos) = ws["states"], ws["inputs"]
    y_pos = y_pos if recurrent is not None and not rectified else None
    states[0] = state0
    for t, d in enumerate(drives):
        i = 0 if rolling else t
        s, s_next = (states[t % 2], states[(t + 1) % 2]) if rolling else (states[t], states[t + 1])
        steps.forward(
            s,
            d,
            ws["h"][i],
            u,
            y_pos,
            ws["recs"][i] if "recs" in ws else None,
            s_next,
            rates,
            recurrent,
            norm,
            gate,
            sigma,
            rectified,
        )
        if outputs is not None:
            outputs[t] = s_next[:, : outputs.shape[2]]
    return states[len(drives) % 2].clone() if rolling else states[-1]


class _KernelSteps:
    """Steps as three torch matmuls and the fused C kernels around them: CPU, float32 or float64."""

    def __init__(self, dtype: torch.dtype) -> None:
        self.lib = cpu_kernels.load(dtype)

    def forward(self, s, d, h, u, y_pos, rec, s_next, rates, recurrent, norm, gate, sigma, rectified):
        """One Euler step from s into s_next, writing h, u = [y]+^2 [a]+, [y]+ (unless None) and R(y) (unless None)."""
        batch, n = s.shape[0], s.shape[1] // 4
        self.lib.forward_prepare(batch, n, s.data_ptr(), _ptr(y_pos), u.data_ptr())
        if recurrent is not None:
            torch.mm(s[:, :n] if y_pos is None else y_pos, recurrent.T, out=rec)
        torch.mm(u, norm.T, out=h[:, n : 2 * n])
        torch.addmm(d[:, n:], s[:, : 2 * n], gate.T, out=h[:, 2 * n :]).sigmoid_()
        self.lib.forward_finish(
            batch,
            n,
            s.data_ptr(),
            d.data_ptr(),
            h.data_ptr(),
            _ptr(rec),
            rectified,
            sigma.data_ptr(),
            rates.data_ptr(),
            s_next.data_ptr(),
        )

    def backward(
        self,
        grad_next,
        s,
        h,
        rec,
        d,
        grad,
        grad_d,
        grad_rec,
        grad_fa,
        grad_rates,
        rates,
        recurrent,
        norm,
        gate,
        sigma,
        rectified,
        products,
        u,
        y_pos,
    ):
        """Gradient through one step, as `_torch_backward_step`."""
        batch, n = s.shape[0], s.shape[1] // 4
        self.lib.backward_prepare(
            batch,
            n,
            grad_next.data_ptr(),
            s.data_ptr(),
            h.data_ptr(),
            d.data_ptr(),
            _ptr(rec),
            rectified,
            rates.data_ptr(),
            sigma.data_ptr(),
            grad.data_ptr(),
            grad_d.data_ptr(),
            _ptr(grad_rec),
            grad_fa.data_ptr(),
            grad_rates.data_ptr(),
            u.data_ptr(),
            _ptr(y_pos),
        )
        g_u, g_r = products
        torch.mm(grad_fa, norm, out=g_u)
        if grad_rec is not None:
            torch.mm(grad_rec, recurrent, out=g_r)
        grad[:, : 2 * n].addmm_(grad_d[:, n:], gate)
        self.lib.backward_finish(
            batch,
            n,
            grad_next.data_ptr(),
            s.data_ptr(),
            _ptr(rec),
            rectified,
            rates.data_ptr(),
            g_u.data_ptr(),
            None if grad_rec is None else g_r.data_ptr(),
            grad.data_ptr(),
        )


def _ptr(tensor: torch.Tensor | None) -> int | None:
    return None if tensor is None else tensor.data_ptr()


def _torch_forward_step(s, d, h, u, y_pos, rec, s_next, rates, recurrent, norm, gate, sigma, rectified):
    """One Euler step from s into s_next, writing h, u = [y]+^2 [a]+, [y]+ (unless None) and R(y) (unless None).
    Computed out of place and copied into the buffers at the end, so that torch.compile can fuse it."""
    n = s.shape[1] // 4
    y, a, b, b0 = s.split(n, 1)
    y_rect, a_rect = y.relu(), a.relu()
    if recurrent is None:
        r = y_rect
    else:
        r = (y @ recurrent.T).relu() if rectified else y_rect @ recurrent.T
    u_new = y_rect.square() * a_rect
    h_new = torch.cat(
        [
            b * d[:, :n] + (1.0 - a_rect.sqrt()) * r,
            (b0 * sigma).square() + u_new @ norm.T,
            torch.sigmoid(d[:, n:] + s[:, : 2 * n] @ gate.T),
        ],
        1,
    )
    h.copy_(h_new)
    u.copy_(u_new)
    if y_pos is not None:
        y_pos.copy_(y_rect)
    if rec is not None:
        rec.copy_(r)
    s_next.copy_(torch.lerp(s, h_new, rates))  # s + rates * (h - s)


def _native_forward(inputs, input_weights, state0, rates, recurrent, norm, gate, sigma, rectified, rectify, outputs):
    """The no-grad forward: all steps in one native call keeping only two rolling states, or with `outputs` in calls
    of up to _CHUNK steps that keep those steps' states, y copied out after each."""
    steps, batch, n = inputs.shape[0], state0.shape[0], state0.shape[1] // 4
    cell = (rates, recurrent, norm, gate, sigma)
    if not outputs:
        ws = _workspace(1, batch, n, inputs, recurrent is not None, backward=False, drives=False)
        ws["states"][0] = state0
        torch.ops.organics_native.forward(
            inputs, input_weights, rectify, ws["states"], ws["h"], ws.get("recs"), *cell, rectified, True
        )
        final = ws["states"][steps % 2].clone()
        _release(ws)
        return None, final
    chunk = max(1, min(steps, _CHUNK))
    ws = _workspace(chunk, batch, n, inputs, recurrent is not None, backward=False, drives=False)
    states, recs = ws["states"], ws.get("recs")
    ys = inputs.new_empty(steps, batch, n)
    states[0] = state0
    for start in range(0, steps, chunk):
        length = min(chunk, steps - start)
        window = (states[: length + 1], ws["h"][:length], None if recs is None else recs[:length])
        torch.ops.organics_native.forward(
            inputs[start : start + length], input_weights, rectify, *window, *cell, rectified, False
        )
        ys[start : start + length] = states[1 : length + 1, :, :n]
        states[0] = states[length]
    final = states[0].clone()
    _release(ws)
    return ys, final


class _NativeScan(torch.autograd.Function):
    """`organics_scan` with both passes in native code (`organics_native.cpp`): one call each way. Returns the final
    state, or (y at every step, final state) with `outputs`."""

    @staticmethod
    def forward(ctx, inputs, input_weights, state0, rates, recurrent, norm, gate, sigma, rectified, rectify, outputs):
        batch, n = state0.shape[0], state0.shape[1] // 4
        ws = _workspace(inputs.shape[0], batch, n, inputs, recurrent is not None, backward=False, drives=False)
        ws["states"][0] = state0
        cell = (rates, recurrent, norm, gate, sigma)
        torch.ops.organics_native.forward(
            inputs, input_weights, rectify, ws["states"], ws["h"], ws.get("recs"), *cell, rectified, False
        )
        ctx.rectified, ctx.rectify, ctx.ws = rectified, rectify, ws
        ctx.save_for_backward(inputs, input_weights, rates, recurrent, norm, gate, sigma)
        final = ws["states"][-1].clone()
        if not outputs:
            return final
        ctx.set_materialize_grads(False)
        return _step_outputs(ws["states"]), final

    @staticmethod
    @once_differentiable
    def backward(ctx, *grads):
        inputs, input_weights, rates, recurrent, norm, gate, sigma = ctx.saved_tensors
        ws = ctx.ws
        if ws is None:
            raise RuntimeError("the ORGaNICs engine frees its buffers after a backward; retain_graph is unsupported")
        grad_outputs, grad_final = _unpack_grads(grads, ws["states"])
        grad_inputs = torch.empty_like(inputs) if ctx.needs_input_grad[0] else None
        grad_input_weights, grad_norm, grad_gate = (torch.zeros_like(w) for w in (input_weights, norm, gate))
        grad_recurrent = None if recurrent is None else torch.zeros_like(recurrent)
        grad_state0 = torch.empty_like(grad_final, memory_format=torch.contiguous_format)
        grad_rates = torch.zeros_like(rates, dtype=torch.float64)
        torch.ops.organics_native.backward(
            grad_final,
            grad_outputs,
            inputs,
            input_weights,
            ws["states"],
            ws["h"],
            ws.get("recs"),
            rates,
            recurrent,
            norm,
            gate,
            sigma,
            ctx.rectified,
            ctx.rectify,
            grad_inputs,
            grad_input_weights,
            grad_state0,
            grad_rates,
            grad_recurrent,
            grad_norm,
            grad_gate,
        )
        _release(ws)
        ctx.ws = None
        grad_rates = grad_rates.to(rates.dtype)
        return (grad_inputs, grad_input_weights, grad_state0, grad_rates, grad_recurrent, grad_norm, grad_gate) + (
            None,
        ) * 4


def _unpack_grads(grads: tuple, states: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
    """(gradient of the per-step outputs or None, gradient of the final state), both contiguous, from a scan
    Function's incoming gradients: (final) or (outputs, final), either of the latter None where unused."""
    grad_final = grads[-1]
    if grad_final is None:
        grad_final = states.new_zeros(states.shape[1:])
    grad_outputs = grads[0] if len(grads) == 2 else None
    return None if grad_outputs is None else grad_outputs.contiguous(), grad_final.contiguous()


class _Scan(torch.autograd.Function):
    """`organics_scan` with the backward through time written out. Returns the final state, or (y at every step,
    final state) with `outputs`."""

    @staticmethod
    def forward(
        ctx, inputs, input_weights, state0, rates, recurrent, norm, gate, sigma, rectified, rectify, steps, outputs
    ):
        batch, n = state0.shape[0], state0.shape[1] // 4
        ws = _workspace(inputs.shape[0], batch, n, inputs, recurrent is not None, backward=False)
        drives = _project(inputs, input_weights, rectify, out=ws["drives"])
        final = _forward(drives, state0, rates, recurrent, norm, gate, sigma, rectified, steps, ws).clone()
        ctx.rectified, ctx.rectify, ctx.ws, ctx.steps = rectified, rectify, ws, steps
        ctx.save_for_backward(inputs, input_weights, rates, recurrent, norm, gate, sigma)
        if not outputs:
            return final
        ctx.set_materialize_grads(False)
        return _step_outputs(ws["states"]), final

    @staticmethod
    @once_differentiable
    def backward(ctx, *grads):
        inputs, input_weights, rates, recurrent, norm, gate, sigma = ctx.saved_tensors
        rectified, fwd = ctx.rectified, ctx.ws
        if fwd is None:
            raise RuntimeError("the ORGaNICs engine frees its buffers after a backward; retain_graph is unsupported")
        grad_outputs, grad_final = _unpack_grads(grads, fwd["states"])
        n = rates.shape[0] // 4
        has_matrix = recurrent is not None
        bwd = _workspace(inputs.shape[0], grad_final.shape[0], n, inputs, has_matrix, backward=True)
        states, h_all, drives = fwd["states"], fwd["h"], fwd["drives"]
        grad_d, grad_fa = bwd["grad_drives"], bwd["grad_fa"]
        grad_rec = bwd.get("grad_rec")
        u, y_pos = bwd["inputs"]
        rec_input = y_pos if has_matrix and not rectified else None
        grad_rates = bwd["grad_rates"].zero_()
        weights = (input_weights, norm, gate) + ((recurrent,) if has_matrix else ())
        weight_grads = [torch.zeros_like(w) for w in weights]
        grad_inputs = torch.empty_like(inputs) if ctx.needs_input_grad[0] else None
        grad_next = bwd["grad"][inputs.shape[0] % 2].copy_(grad_final)  # step t reads [(t + 1) % 2], writes [t % 2]
        for t in reversed(range(inputs.shape[0])):
            if grad_outputs is not None:  # the output of step t is y_{t + 1}, the state that grad_next belongs to
                grad_next[:, :n] += grad_outputs[t]
            grad, s = bwd["grad"][t % 2], states[t]
            rec = fwd["recs"][t] if "recs" in fwd else None
            ctx.steps.backward(
                grad_next,
                s,
                h_all[t],
                rec,
                drives[t],
                grad,
                grad_d,
                grad_rec,
                grad_fa,
                grad_rates,
                rates,
                recurrent,
                norm,
                gate,
                sigma,
                rectified,
                bwd["products"],
                u,
                rec_input,
            )
            if ctx.rectify:  # z = [W_zx x]+: no gradient where it is 0
                _threshold_backward.grad_input(grad_d[:, :n], drives[t, :, :n], 0, grad_input=grad_d[:, :n])
            _accumulate_weight_grads(weight_grads, inputs[t], grad_d, u, grad_fa, s, grad_rec, rec_input, n)
            if grad_inputs is not None:
                torch.mm(grad_d, input_weights, out=grad_inputs[t])
            grad_next = grad
        grad_input_weights, grad_norm, grad_gate = weight_grads[:3]
        grads = (
            grad_inputs,
            grad_input_weights,
            grad_next.clone(),
            grad_rates.to(rates.dtype),
            weight_grads[3] if has_matrix else None,
            grad_norm,
            grad_gate,
            None,
            None,
            None,
            None,
            None,
        )
        _release(fwd)
        _release(bwd)
        ctx.ws = None
        return grads


def _torch_backward_step(
    grad_next,
    s,
    h,
    rec,
    d,
    grad,
    grad_d,
    grad_rec,
    grad_fa,
    grad_rates,
    rates,
    recurrent,
    norm,
    gate,
    sigma,
    rectified,
    products,
    u,
    y_pos_out,
):
    """Gradient through one step: grad of s from grad_next; writes grad_d (drive), grad_rec (R's output, unless None),
    grad_fa (f_a), the step's u = [y]+^2 [a]+ and [y]+ (unless None), and adds into grad_rates; `products` is
    unused. Computed out of place and copied into the buffers at the end, so that torch.compile can fuse it."""
    n = s.shape[1] // 4
    y, a, b, b0 = s.split(n, 1)
    grad_rates.add_((grad_next * (h - s)).sum(0))
    gf = grad_next * rates  # gradient with respect to f = h - s
    gf_y, gf_a, gf_g = gf[:, :n], gf[:, n : 2 * n], gf[:, 2 * n :]
    through = grad_next - gf  # the state's own share of s + rates * (h - s)
    y_rect, a_rect = y.relu(), a.relu()
    sqrt_a = a_rect.sqrt()
    r = y_rect if recurrent is None else rec
    # h_y = b z + (1 - sqrt[a]+) R(y)
    g_rec = gf_y - gf_y * sqrt_a
    # h_a = (b0 sigma)^2 + ([y]+^2 [a]+) W^T; [a]+ also enters h_y through sqrt
    g_u = gf_a @ norm
    g_a_rect = g_u * y_rect.square() - 0.5 * (gf_y * r) / sqrt_a
    g_y_rect = 2.0 * g_u * (y_rect * a_rect)
    g_y = through[:, :n]
    if recurrent is None:
        g_y_rect = g_y_rect + g_rec
    elif rectified:
        g_rec = _threshold_backward(g_rec, rec, 0)
        g_y = g_y + g_rec @ recurrent
    else:
        g_y_rect = g_y_rect + g_rec @ recurrent
    # h_g = sigmoid(gate drive + [y, a] G^T)
    g_gate = _sigmoid_backward(gf_g, h[:, 2 * n :])
    g_state = torch.cat(
        [
            g_y + _threshold_backward(g_y_rect, y, 0),
            through[:, n : 2 * n] + _threshold_backward(g_a_rect, a, 0),
            through[:, 2 * n : 3 * n] + gf_y * d[:, :n],
            through[:, 3 * n :] + gf_a * (b0 * sigma.square() * 2.0),
        ],
        1,
    )
    grad.copy_(g_state)
    grad[:, : 2 * n].add_(g_gate @ gate)
    grad_d.copy_(torch.cat([gf_y * b, g_gate], 1))
    if grad_rec is not None:
        grad_rec.copy_(g_rec)
    grad_fa.copy_(gf_a)
    u.copy_(y_rect.square() * a_rect)
    if y_pos_out is not None:
        y_pos_out.copy_(y_rect)


def _accumulate_weight_grads(weight_grads, x, grad_d, u, grad_fa, s, grad_rec, rec_input, n) -> None:
    """Add one step's terms g^T input to the gradients of [input weights, W, G] and R if any (out = input M^T)."""
    grad_input_weights, grad_norm, grad_gate = weight_grads[:3]
    grad_input_weights.addmm_(grad_d.T, x)
    grad_norm.addmm_(grad_fa.T, u)
    grad_gate.addmm_(grad_d[:, n:].T, s[:, : 2 * n])
    if grad_rec is not None:
        weight_grads[3].addmm_(grad_rec.T, s[:, :n] if rec_input is None else rec_input)


class _TorchSteps:
    """Steps written as torch operations: any device."""

    forward = staticmethod(_torch_forward_step)
    backward = staticmethod(_torch_backward_step)


@lru_cache(maxsize=1)
def compiled_steps() -> _TorchSteps:
    """The torch steps compiled with torch.compile (one graph per step, recompiled per shape and per R(y) form)."""
    steps = _TorchSteps()
    steps.forward = compile_step(_torch_forward_step)
    steps.backward = compile_step(_torch_backward_step)
    return steps
