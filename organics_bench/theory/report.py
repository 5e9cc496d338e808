"""Output helpers shared by the theory experiments: a headless figure, JSON-safe numbers, writing both files."""
from __future__ import annotations

import functools
import json
import math
import pathlib
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np
import torch
from matplotlib.figure import Figure

T = TypeVar("T")


def figure(nrows: int = 1, ncols: int = 1, width: float = 5.0, height: float = 4.0,
           **kwargs: Any) -> tuple[Figure, Any]:
    """A matplotlib Figure (Agg canvas, no pyplot state) with a grid of axes of ``width × height`` inches each."""
    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    return fig, fig.subplots(nrows, ncols, squeeze=False, **kwargs)


def jsonable(x: Any) -> Any:
    """Convert tensors, arrays and numpy scalars to plain Python; non-finite floats become strings."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    if isinstance(x, np.ndarray):
        return [jsonable(v) for v in x.tolist()] if x.ndim else jsonable(x.item())
    if isinstance(x, np.generic):
        return jsonable(x.item())
    if isinstance(x, Mapping):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, Sequence) and not isinstance(x, str):
        return [jsonable(v) for v in x]
    if isinstance(x, complex):
        return {"re": jsonable(x.real), "im": jsonable(x.imag)}
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if isinstance(x, pathlib.Path):
        return str(x)
    return x


def save(out_dir: pathlib.Path, name: str, summary: dict[str, Any], fig: Figure, started: float) -> dict[str, Any]:
    """Write ``<name>.png`` and ``<name>.json`` into ``out_dir``; return the JSON-safe summary with run metadata."""
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_dir / f"{name}.png", dpi=120)
    summary = jsonable({**summary, "experiment": name, "wall_time_s": round(time.perf_counter() - started, 3),
                        "torch_version": torch.__version__, "python": platform.python_version()})
    (out_dir / f"{name}.json").write_text(json.dumps(summary, indent=2) + "\n")
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
