"""What every theory experiment's run shares: single-threaded torch, a seeded generator, a headless figure, and
writing ``<name>.png`` and ``<name>.json`` (JSON-safe numbers, run metadata)."""

from __future__ import annotations

import functools
import pathlib
import platform
import time
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from matplotlib.figure import Figure

from organics_bench.io import atomic_path, jsonable, write_json_atomic

T = TypeVar("T")


def figure(
    nrows: int = 1, ncols: int = 1, width: float = 5.0, height: float = 4.0, **kwargs: Any
) -> tuple[Figure, Any]:
    """A matplotlib Figure (Agg canvas, no pyplot state) with a grid of axes of ``width × height`` inches each."""
    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    return fig, fig.subplots(nrows, ncols, squeeze=False, **kwargs)


def save(out_dir: pathlib.Path, name: str, summary: dict[str, Any], fig: Figure, started: float) -> dict[str, Any]:
    """Write ``<name>.png`` and ``<name>.json`` into ``out_dir``; return the JSON-safe summary with run metadata."""
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / f"{name}.png") as tmp:
        fig.savefig(tmp, dpi=120)
    summary = jsonable(
        {
            **summary,
            "experiment": name,
            "wall_time_s": round(time.perf_counter() - started, 3),
            "torch_version": torch.__version__,
            "python": platform.python_version(),
        }
    )
    write_json_atomic(summary, out_dir / f"{name}.json")
    return summary


def single_threaded(fn: Callable[..., T]) -> Callable[..., T]:
    """Run ``fn`` with torch single-threaded: the theory tensors are tiny, and on a busy 2-core machine intra-op
    threading made elementwise ops on them 10x slower (measured)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return fn(*args, **kwargs)
        finally:
            torch.set_num_threads(threads)

    return wrapper


def seeded(seed: int) -> torch.Generator:
    """A CPU generator seeded with ``seed`` (all theory sampling goes through one of these)."""
    return torch.Generator().manual_seed(seed)
