"""Every file the project writes goes through here: atomic writes, and one policy for non-finite numbers.

Atomic: a file is written under a temporary name unique to this process, then renamed, so readers (and a crash,
a SIGTERM, or a second run writing the same file) never see half of it. Non-finite numbers: JSON has no NaN or
Infinity, so every JSON file writes them as the strings "nan", "inf" and "-inf" (CSV files write the same
strings); `finite_or_none` reads them back.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import shutil
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch


@contextmanager
def atomic_path(path: pathlib.Path) -> Iterator[pathlib.Path]:
    """Yield a temporary path beside `path` (same suffix, unique to this process); rename it onto `path` when the
    block succeeds, delete it when the block fails."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(text: str, path: pathlib.Path) -> None:
    """Write `text` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(payload: Any, path: pathlib.Path) -> None:
    """Write `payload` as indented JSON, atomically, with non-finite floats as strings (`jsonable`)."""
    write_text_atomic(json.dumps(jsonable(payload), indent=2, allow_nan=False) + "\n", path)


def copy_atomic(source: pathlib.Path, target: pathlib.Path) -> None:
    """Copy a file so that `target` is either absent, the old file, or the whole new one."""
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)


def jsonable(x: Any) -> Any:
    """Tensors, arrays, numpy scalars, complex numbers and paths as plain JSON values; non-finite floats as the
    strings "nan", "inf", "-inf"."""
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
    if isinstance(x, pathlib.PurePath):
        return str(x)
    return x


def finite_or_none(value: Any) -> float | None:
    """A number read back from a JSON or CSV file: the float if it is finite, else None ("nan", "inf", null)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None
