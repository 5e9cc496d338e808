"""The CUDA form of the sequence engines' steps: their out-of-place torch steps compiled with torch.compile (one
graph per step, no graph breaks, recompiled per shape), where Triton can build the kernels."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from functools import lru_cache

import torch


@lru_cache(maxsize=1)
def can_compile() -> bool:
    """Whether torch.compile can build CUDA kernels here (Triton installed); says once where it cannot."""
    from torch.utils._triton import has_triton

    if has_triton():
        return True
    warnings.warn(
        "Triton is not installed: the sequence engines run their CUDA steps uncompiled (same numbers, slower)",
        stacklevel=2,
    )
    return False


def compile_step(step: Callable[..., None]) -> Callable[..., None]:
    """`step` compiled as one graph for each shape it meets (a graph break is an error, not a slow path)."""
    return torch.compile(step, fullgraph=True, dynamic=False)
