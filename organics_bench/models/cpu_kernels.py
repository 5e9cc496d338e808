"""Build and load the fused CPU kernels with the system C compiler, once per machine: the sequence engine's
(`organics_kernels.c`), the batched LU of the static layers' Algorithm 1 (`fixed_point_kernels.c`) and the SSN
engine's (`ssn_kernels.c`).

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
from functools import cache
from pathlib import Path

import torch

FLAGS = ["-O3", "-march=native", "-fno-math-errno", "-fno-trapping-math", "-fPIC", "-shared", "-std=c11"]
# more flags per source: the batched LU is written for fused multiply-adds, which ISO C mode does not form by itself
SOURCE_FLAGS = {"fixed_point_kernels": ["-ffp-contract=fast"]}
REALS = {torch.float32: "float", torch.float64: "double"}
_P, _L, _I, _D = ctypes.c_void_p, ctypes.c_long, ctypes.c_int, ctypes.c_double
# per source file (its stem): function name -> (argument types, return type)
SIGNATURES = {
    "organics_kernels": {
        "forward_prepare": ([_L, _L, _P, _P, _P], None),
        "forward_finish": ([_L, _L, _P, _P, _P, _P, _I, _P, _P, _P], None),
        "backward_prepare": ([_L, _L, _P, _P, _P, _P, _P, _I, _P, _P, _P, _P, _P, _P, _P, _P, _P], None),
        "backward_finish": ([_L, _L, _P, _P, _P, _I, _P, _P, _P, _P], None),
    },
    "fixed_point_kernels": {
        "lanes": ([], _L),
        "factor_solve": ([_L, _L, _P, _P, _P, _P, _P, _P, _P, _P], None),
        "adjoint_solve": ([_L, _L, _P, _P, _P, _P, _P], None),
    },
    "ssn_kernels": {
        "ssn_padded": ([_L], _L),
        "ssn_forward": ([_L, _L, _L, _P, _P, _L, _P, _D, _D, _P, _P, _P], _I),
        "ssn_backward": ([_L, _L, _L, _P, _P, _P, _D, _D, _P, _P, _L, _P, _P], _I),
    },
}
USERS = {"organics_kernels": "ORGaNICs engine", "fixed_point_kernels": "Algorithm 1", "ssn_kernels": "SSN engine"}


def available(tensor: torch.Tensor, source: str = "organics_kernels") -> bool:
    """Whether the kernels of `source` can run on this tensor's device and dtype (building them if needed)."""
    return tensor.device.type == "cpu" and tensor.dtype in REALS and load(tensor.dtype, source) is not None


@cache
def load(dtype: torch.dtype, source: str = "organics_kernels") -> ctypes.CDLL | None:
    """The kernels of `source` for float32 or float64 as a ctypes library, or None (with one warning) if they cannot
    be built."""
    try:
        library = ctypes.CDLL(str(_build(REALS[dtype], source)))
    except (OSError, subprocess.SubprocessError) as error:
        warnings.warn(
            f"{USERS[source]}: fused CPU kernels unavailable ({error}); using torch operations",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
    for name, (argtypes, restype) in SIGNATURES[source].items():
        function = getattr(library, name)
        function.argtypes, function.restype = argtypes, restype
    return library


def _build(real: str, source: str) -> Path:
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise OSError("no C compiler found (set CC)")
    path = Path(__file__).with_name(f"{source}.c")
    flags = [*FLAGS, *SOURCE_FLAGS.get(source, []), f"-DREAL={real}"]
    key = hashlib.sha256("\n".join([path.read_text(), compiler, *flags, cpu_description()]).encode()).hexdigest()[:16]
    target = cache_dir() / f"{source}_{real}_{key}.so"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            built = Path(tmp) / target.name
            result = subprocess.run(
                [compiler, *flags, str(path), "-o", str(built), "-lm"], capture_output=True, text=True, timeout=120
            )
            if result.returncode != 0:
                raise OSError(f"{compiler} failed: {result.stderr.strip().splitlines()[-1:]}")
            os.replace(built, target)
    return target


def cache_dir() -> Path:
    if "ORGANICS_BENCH_CACHE" in os.environ:
        return Path(os.environ["ORGANICS_BENCH_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "organics-bench"


def cpu_description() -> str:
    """What -march=native depends on: the machine and, on Linux, the CPU model and its flags."""
    try:
        first_cpu = Path("/proc/cpuinfo").read_text().split("\n\n")[0].splitlines()
    except OSError:
        first_cpu = [platform.processor()]
    fields = ("vendor_id", "cpu family", "model", "model name", "flags", "Features", "CPU part")
    return "\n".join([platform.machine(), *(line for line in first_cpu if line.split(":")[0].strip() in fields)])
