"""Build and load the engine's fused CPU kernels (`organics_kernels.c`) with the system C compiler, once per machine.

The shared libraries are cached under $ORGANICS_BENCH_CACHE (default: $XDG_CACHE_HOME/organics-bench, else
~/.cache/organics-bench), keyed by the source, the compiler flags and the CPU, since they are built for the
machine's own instruction set. Building takes about a second; it is written to a temporary name and renamed, so
parallel processes never load a half-written file. Where no compiler works, `load` returns None and says why once:
the engine then runs the same steps with torch operations (slower, same numbers).
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from functools import lru_cache
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("organics_kernels.c")
FLAGS = ["-O3", "-march=native", "-fno-math-errno", "-fno-trapping-math", "-fPIC", "-shared", "-std=c11"]
REALS = {torch.float32: "float", torch.float64: "double"}
_P, _L, _I = ctypes.c_void_p, ctypes.c_long, ctypes.c_int
SIGNATURES = {
    "forward_prepare": [_L, _L, _P, _P, _P],
    "forward_finish": [_L, _L, _P, _P, _P, _P, _I, _P, _P, _P],
    "backward_prepare": [_L, _L, _P, _P, _P, _P, _P, _I, _P, _P, _P, _P, _P, _P, _P, _P, _P],
    "backward_finish": [_L, _L, _P, _P, _P, _I, _P, _P, _P, _P],
}


def available(tensor: torch.Tensor) -> bool:
    """Whether the fused kernels can run on this tensor's device and dtype (building them if needed)."""
    return tensor.device.type == "cpu" and tensor.dtype in REALS and load(tensor.dtype) is not None


@lru_cache(maxsize=None)
def load(dtype: torch.dtype) -> ctypes.CDLL | None:
    """The kernels for float32 or float64 as a ctypes library, or None (with one warning) if they cannot be built."""
    try:
        library = ctypes.CDLL(str(_build(REALS[dtype])))
    except (OSError, subprocess.SubprocessError) as error:
        warnings.warn(f"ORGaNICs engine: fused CPU kernels unavailable ({error}); using torch operations",
                      RuntimeWarning, stacklevel=2)
        return None
    for name, argtypes in SIGNATURES.items():
        function = getattr(library, name)
        function.argtypes, function.restype = argtypes, None
    return library


def _build(real: str) -> Path:
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise OSError("no C compiler found (set CC)")
    flags = [*FLAGS, f"-DREAL={real}"]
    key = hashlib.sha256("\n".join([SOURCE.read_text(), compiler, *flags, _cpu()]).encode()).hexdigest()[:16]
    target = _cache_dir() / f"organics_kernels_{real}_{key}.so"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            built = Path(tmp) / target.name
            result = subprocess.run([compiler, *flags, str(SOURCE), "-o", str(built), "-lm"],
                                    capture_output=True, text=True, timeout=120)
            if result.returncode != 0:
                raise OSError(f"{compiler} failed: {result.stderr.strip().splitlines()[-1:]}")
            os.replace(built, target)
    return target


def _cache_dir() -> Path:
    if "ORGANICS_BENCH_CACHE" in os.environ:
        return Path(os.environ["ORGANICS_BENCH_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "organics-bench"


def _cpu() -> str:
    """What -march=native depends on: the machine and, on Linux, the CPU model and its flags."""
    try:
        first_cpu = Path("/proc/cpuinfo").read_text().split("\n\n")[0].splitlines()
    except OSError:
        first_cpu = [platform.processor()]
    fields = ("vendor_id", "cpu family", "model", "model name", "flags", "Features", "CPU part")
    return "\n".join([platform.machine(), *(line for line in first_cpu if line.split(":")[0].strip() in fields)])
