"""Build and load the native time loop of the ORGaNICs engine (`organics_native.cpp`) as torch operators, once per
machine, with torch.utils.cpp_extension (a C++ compiler and ninja).

The build is cached beside the C kernels' (`cpu_kernels.cache_dir`), in a folder keyed by the sources, the flags,
the torch version and the CPU, since it is compiled for the machine's own instruction set; a second process waits
for a build under way (cpp_extension's lock). Building takes about a minute the first time. Where it fails,
`available` says why once, as a warning, and the engine runs today's per-step path (`cpu-kernels`); `require`
turns the same failure into a UserError, for a run that asked for the native engine explicitly.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import warnings
from functools import cache
from pathlib import Path

import torch

from organics_bench.errors import UserError
from organics_bench.models import cpu_kernels

SOURCES = ("organics_native.cpp", "organics_kernels.c")
FLAGS = ["-O3", "-march=native", "-fno-math-errno", "-fno-trapping-math", "-std=c++20", "-fopenmp"]
NAMESPACE = "organics_native"


def available(tensor: torch.Tensor) -> bool:
    """Whether the native loop can run on this tensor's device and dtype (building it if needed; where it cannot be
    built, one warning says why)."""
    return tensor.device.type == "cpu" and tensor.dtype in cpu_kernels.REALS and build_error() is None


def require() -> None:
    """Build the native loop, or raise a UserError saying why it cannot be built here."""
    reason = _build_failure()
    if reason is not None:
        raise UserError(f"the native ORGaNICs engine cannot be built here ({reason}); use model.engine=fused")


@cache
def build_error() -> str | None:
    """None once the operators are loaded, else why they could not be built, said once as a warning."""
    reason = _build_failure()
    if reason is not None:
        warnings.warn(
            f"ORGaNICs engine: native time loop unavailable ({reason}); using the per-step C kernels",
            RuntimeWarning,
            stacklevel=3,
        )
    return reason


def reset() -> None:
    """Forget the build's outcome, so that the next use builds (or fails) again: after installing a compiler."""
    build_error.cache_clear()
    _build_failure.cache_clear()


@cache
def _build_failure() -> str | None:
    """None once the operators are loaded, else the last line of why they could not be built."""
    try:
        _load()
    except Exception as error:  # a compiler's or ninja's failure, of whatever type cpp_extension raises
        return _reason(error)
    return None


def _load() -> None:
    # cpp_extension logs at import that no CUDA runtime is found, which says nothing about a CPU build
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    from torch.utils import cpp_extension

    compiler = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    if compiler is None or not Path(compiler).exists() and shutil.which(compiler) is None:
        raise OSError("no C++ compiler found (set CXX)")
    if not cpp_extension.is_ninja_available():
        raise OSError("ninja is not installed (pip install ninja)")
    here = Path(__file__).parent
    key_parts = [*(here.joinpath(name).read_text() for name in SOURCES), compiler, *FLAGS, torch.__version__]
    key = hashlib.sha256("\n".join([*key_parts, cpu_kernels.cpu_description()]).encode()).hexdigest()[:16]
    build_dir = cpu_kernels.cache_dir() / f"{NAMESPACE}_{key}"
    build_dir.mkdir(parents=True, exist_ok=True)
    cpp_extension.load(
        name=f"{NAMESPACE}_{key}",
        sources=[str(here / SOURCES[0])],
        extra_cflags=[*FLAGS, f"-I{here}"],
        build_directory=str(build_dir),
        is_python_module=False,
        verbose=False,
    )


def _reason(error: Exception) -> str:
    """The last line of what went wrong: a compiler error's own message rather than cpp_extension's preamble."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    return (errors or lines or [type(error).__name__])[-1][:300]
