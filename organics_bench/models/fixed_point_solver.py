"""Algorithm 1 (docs/equations.md, 'Algorithm 1'; `organics_bench.equations.algorithm1`) with a hand-written backward
through its K iterations.

The same iterates as the reference generator, with the same gradient (the adjoint of the unrolled iterations, not an
implicit one), computed more cheaply:
  forward:  each iteration factors A_k = I - diag(c_k) W_r, c_k = 1 - sqrt(a_{k-1}) (or 1 - a_{k-1}), once per
            sample and keeps the factors; on the CPU a batched LU kernel (`fixed_point_kernels.c`) factors many
            samples at once, elsewhere torch.linalg.lu_factor does;
  backward: y_k = A_k^-1 b z gives lambda = A_k^-T dL/dy_k, one solve with the kept factors, and then
            dL/d(b z) += lambda,  dL/dc_k = lambda * (W_r y_k),  dL/dW_r += (c_k lambda)^T y_k,
            so no (batch, n, n) tensor is built, differentiated or summed over the batch, as autograd does.
Without gradients the factors are not kept (one group's room on the CPU). On the CPU the factors' buffers are reused
from step to step (a backward returns its forward's; at most `SPARE` of a size are kept): freshly allocated memory
costs a page fault per 4 KiB, which added half the factorizations' time. So a second backward through one graph is
refused.
"""

from __future__ import annotations

from collections import defaultdict

import torch
from torch.autograd.function import once_differentiable

from organics_bench.equations import algorithm1
from organics_bench.models import cpu_kernels

KERNELS = "fixed_point_kernels"
SPARE = 32  # free factor buffers kept per size: two forwards of K = 10 iterations, with room
_FREE: defaultdict[tuple, list[tuple[torch.Tensor, torch.Tensor]]] = defaultdict(list)


def algorithm1_adjoint(
    drive: torch.Tensor,
    floor: torch.Tensor,
    W: torch.Tensor,
    W_r: torch.Tensor,
    iterations: int,
    official_diag_a: bool = False,
    eps: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(y_K, a_K) of Algorithm 1 for a drive (batch, n) and shared (n,) floor, (n, n) W and W_r."""
    solver = _KernelLU(drive.dtype) if backend(drive) == "cpu-kernels" else _TorchLU()
    if torch.is_grad_enabled() and any(t.requires_grad for t in (drive, floor, W, W_r)):
        return _Algorithm1.apply(drive, floor, W, W_r, iterations, official_diag_a, eps, solver)
    ys, as_, _ = _iterate(drive, floor, W, W_r, iterations, official_diag_a, eps, solver, keep=False)
    return ys[-1], as_[-1]


def backend(tensor: torch.Tensor) -> str:
    """Who factors A_k for this tensor's device and dtype: "cpu-kernels" (CPU, float32/64) or "torch"."""
    return "cpu-kernels" if cpu_kernels.available(tensor, KERNELS) else "torch"


def _iterate(drive, floor, W, W_r, iterations, official_diag_a, eps, solver, keep):
    """Iterates y_0..y_K, a_0..a_K of `algorithm1`, its y equations solved by `solver`, and the factors of A_1..A_K
    (None each unless `keep`)."""
    factors = []

    def solve(c: torch.Tensor, W_r: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        y, factor = solver.factor_solve(c, W_r, d, keep)
        factors.append(factor)
        return y

    ys, as_ = zip(*algorithm1(drive, floor, W, W_r, iterations, official_diag_a, eps, solve))
    return ys, as_, factors


class _Algorithm1(torch.autograd.Function):
    @staticmethod
    def forward(ctx, drive, floor, W, W_r, iterations, official_diag_a, eps, solver):
        ys, as_, factors = _iterate(drive, floor, W, W_r, iterations, official_diag_a, eps, solver, keep=True)
        ctx.official_diag_a, ctx.solver, ctx.factors, ctx.floor_shape = official_diag_a, solver, factors, floor.shape
        ctx.save_for_backward(drive, W, W_r, *ys, *as_)
        return ys[-1], as_[-1]

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y, grad_a):
        if ctx.factors is None:
            raise RuntimeError(
                "Algorithm 1 (fixed_point_solver=adjoint) frees its factors after a backward; "
                "retain_graph is unsupported (fixed_point_solver=autograd supports it)"
            )
        drive, W, W_r, *saved = ctx.saved_tensors
        ys, as_ = saved[: len(saved) // 2], saved[len(saved) // 2 :]
        grad_y = torch.zeros_like(ys[-1]) if grad_y is None else grad_y
        grad_a = torch.zeros_like(as_[-1]) if grad_a is None else grad_a
        grad_drive, grad_floor = torch.zeros_like(drive), torch.zeros_like(as_[0])
        grad_W, grad_W_r = torch.zeros_like(W), torch.zeros_like(W_r)
        for k in range(len(ctx.factors), 0, -1):
            y, a_prev = ys[k], as_[k - 1]
            grad_floor += grad_a  # a_k = floor + (y_k^2 a_{k-1}) W^T + eps
            grad_W.addmm_(grad_a.T, y.square() * a_prev)
            grad_u = grad_a @ W
            grad_y = grad_u * 2 * y * a_prev + (grad_y if k == len(ctx.factors) else 0)
            grad_a = grad_u * y.square()
            lam = ctx.solver.adjoint_solve(ctx.factors[k - 1], grad_y)  # y_k = A_k^-1 drive
            grad_drive += lam
            gain = a_prev if ctx.official_diag_a else torch.sqrt(a_prev)
            grad_W_r.addmm_(((1.0 - gain) * lam).T, y)
            grad_c = lam * (y @ W_r.T)
            grad_a = grad_a - (grad_c if ctx.official_diag_a else grad_c / (2 * gain))
        start = drive @ W_r.T  # a_0 = floor + start^2 W^T + eps, y_0 = start / sqrt(a_0)
        a_0 = as_[0]
        grad_start = torch.zeros_like(start)
        if not ctx.factors:
            grad_start = grad_y / torch.sqrt(a_0)
            grad_a = grad_a - grad_y * start / (2 * a_0 * torch.sqrt(a_0))
        grad_floor += grad_a
        grad_W.addmm_(grad_a.T, start.square())
        grad_start = grad_start + 2 * start * (grad_a @ W)
        grad_drive += grad_start @ W_r
        grad_W_r.addmm_(grad_start.T, drive)
        ctx.solver.release(ctx.factors)
        ctx.factors = None
        return grad_drive, grad_floor.sum_to_size(ctx.floor_shape), grad_W, grad_W_r, None, None, None, None


class _KernelLU:
    """Batched LU with partial pivoting in C (`fixed_point_kernels.c`), many samples at once per vector."""

    def __init__(self, dtype: torch.dtype) -> None:
        self.lib = cpu_kernels.load(dtype, KERNELS)
        self.lanes = self.lib.lanes()

    def factor_solve(
        self, c: torch.Tensor, W_r: torch.Tensor, d: torch.Tensor, keep: bool
    ) -> tuple[torch.Tensor, tuple | None]:
        """y = (I - diag(c) W_r)^-1 d per sample, and the factors if `keep`."""
        (batch, n), groups = c.shape, -(-c.shape[0] // self.lanes) if keep else 1
        c, W_r, d = c.contiguous(), W_r.contiguous(), d.contiguous()
        scratch, _ = _take(c.dtype, n * n * self.lanes, 0)
        lu, piv = _take(c.dtype, groups * n * n * self.lanes if keep else 0, groups * n * self.lanes)
        work, y = c.new_empty(n * self.lanes), torch.empty_like(d)
        self.lib.factor_solve(
            batch,
            n,
            c.data_ptr(),
            W_r.data_ptr(),
            d.data_ptr(),
            scratch.data_ptr(),
            lu.data_ptr() if keep else None,
            piv.data_ptr(),
            work.data_ptr(),
            y.data_ptr(),
        )
        self.release([(scratch, _)] + ([] if keep else [(lu, piv)]))
        return y, (lu, piv) if keep else None

    def adjoint_solve(self, factors: tuple, g: torch.Tensor) -> torch.Tensor:
        """A^-T g per sample from kept factors."""
        lu, piv = factors
        g = g.contiguous()
        x, work = torch.empty_like(g), g.new_empty(g.shape[1] * self.lanes)
        self.lib.adjoint_solve(*g.shape, lu.data_ptr(), piv.data_ptr(), g.data_ptr(), work.data_ptr(), x.data_ptr())
        return x

    @staticmethod
    def release(factors: list[tuple]) -> None:
        """Give kept factors' buffers back for reuse by later forwards."""
        for lu, piv in factors:
            free = _FREE[lu.dtype, lu.numel(), piv.numel()]
            if len(free) < SPARE:
                free.append((lu, piv))


def _take(dtype: torch.dtype, size: int, pivots: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Buffers for `size` reals and `pivots` ints: free ones of that size if any, else new."""
    free = _FREE[dtype, size, pivots]
    return free.pop() if free else (torch.empty(size, dtype=dtype), torch.empty(pivots, dtype=torch.int32))


class _TorchLU:
    """The same with torch.linalg.lu_factor and lu_solve (CUDA, other dtypes, or no C compiler)."""

    @staticmethod
    def factor_solve(
        c: torch.Tensor, W_r: torch.Tensor, d: torch.Tensor, keep: bool
    ) -> tuple[torch.Tensor, tuple | None]:
        A = torch.eye(W_r.shape[-1], dtype=W_r.dtype, device=W_r.device) - c.unsqueeze(-1) * W_r
        lu, piv, _ = torch.linalg.lu_factor_ex(A)
        y = torch.linalg.lu_solve(lu, piv, d.unsqueeze(-1)).squeeze(-1)
        return y, (lu, piv) if keep else None

    @staticmethod
    def adjoint_solve(factors: tuple, g: torch.Tensor) -> torch.Tensor:
        lu, piv = factors
        return torch.linalg.lu_solve(lu, piv, g.unsqueeze(-1), adjoint=True).squeeze(-1)

    @staticmethod
    def release(factors: list[tuple]) -> None:
        """Nothing to reuse: torch's allocator caches on CUDA."""
