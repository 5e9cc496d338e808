"""Test helpers: run `organics-bench` (as a subprocess, or in this process through the same entry point), and write
MNIST / CIFAR-10 files in torchvision's real on-disk formats."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import random
import signal
import struct
import subprocess
import sys
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SCRIPT = Path(sys.executable).parent / "organics-bench"
ROOT = Path(__file__).resolve().parents[1]
CLI_ENV = {"WANDB_MODE": "disabled", "TQDM_DISABLE": "1", "HYDRA_FULL_ERROR": "0"}


def run_bench(out_dir: Path, *args: str) -> subprocess.CompletedProcess:
    """Run `scripts/bench_throughput.py ARGS --out OUT_DIR` in OUT_DIR, as `make bench` runs it."""
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_throughput.py"), *args, "--out", str(out_dir)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=out_dir,
    )


def run_cli(*args: str, cwd: Path, timeout: int = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `organics-bench ARGS` as a user would, in a process of its own, with wandb off unless the caller says
    otherwise. Costs a Python start with torch and Hydra imports (seconds): for what only a real process shows
    (the installed script, signals, concurrent processes, launcher plugins, warnings at import)."""
    return subprocess.run(
        [str(SCRIPT), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **CLI_ENV, **(env or {})},
    )


@dataclass
class CliResult:
    """What `run_cli` gives (returncode, stdout, stderr), plus the output dir of the (last) job Hydra ran."""

    returncode: int
    stdout: str
    stderr: str
    run_dir: Path | None = None


# What a fresh interpreter shows and hides (the `warnings` module's default filters, `python -W` unset).
_FRESH_INTERPRETER_FILTERS = [
    ("default", DeprecationWarning, "__main__"),
    ("ignore", DeprecationWarning, ""),
    ("ignore", PendingDeprecationWarning, ""),
    ("ignore", ImportWarning, ""),
    ("ignore", ResourceWarning, ""),
]


def _print_warning(message, category, filename, lineno, file=None, line=None) -> None:
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def run_in_process(*args: str, cwd: Path, env: dict | None = None) -> CliResult:
    """`organics-bench ARGS` in this process: the console script's own `organics_bench.cli:main` (the choice check,
    Hydra's run or multirun with the PreflightChecks callback, validation, the job, `error: ...` and exit 2 on a
    UserError), with the argv, working dir, environment, stdout, stderr and warnings a subprocess would have.

    Everything a process exit would undo is undone afterwards (the CLI releases its run-dir locks itself): the
    SIGTERM handler, torch's thread count, subnormal flushing and RNGs, logging handlers, env vars and Hydra's global
    state restored. The exit code is SystemExit's (0 when main returns; 1 and a traceback on stderr for an uncaught
    exception)."""
    import torch
    from hydra.core.global_hydra import GlobalHydra

    from organics_bench import cli
    from organics_bench.training.records import flushes_denormals

    full_env = {**CLI_ENV, **(env or {})}
    saved_env = {key: os.environ.get(key) for key in full_env}
    saved_argv, saved_sigterm = sys.argv, signal.getsignal(signal.SIGTERM)
    saved_threads, saved_denormal = torch.get_num_threads(), flushes_denormals()
    saved_rng = (random.getstate(), np.random.get_state(), torch.random.get_rng_state())
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    stdout, stderr = io.StringIO(), io.StringIO()
    GlobalHydra.instance().clear()
    returncode, job_dirs = 0, []
    try:
        os.environ.update(full_env)
        sys.argv = [str(SCRIPT), *args]
        with (
            contextlib.chdir(cwd),
            contextlib.redirect_stdout(stdout),
            contextlib.redirect_stderr(stderr),
            warnings.catch_warnings(),
            _recording_job_dirs(job_dirs),
        ):
            warnings.resetwarnings()
            for action, category, module in reversed(_FRESH_INTERPRETER_FILTERS):
                warnings.filterwarnings(action, category=category, module=module)
            warnings.showwarning = _print_warning
            try:
                cli.main()
            except SystemExit as stop:
                if stop.code is None or isinstance(stop.code, int):
                    returncode = stop.code or 0
                else:
                    print(stop.code, file=sys.stderr)
                    returncode = 1
            except Exception:  # what the interpreter does with an uncaught exception
                traceback.print_exc()
                returncode = 1
    finally:
        sys.argv = saved_argv
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        signal.signal(signal.SIGTERM, saved_sigterm)
        torch.set_num_threads(saved_threads)
        torch.set_flush_denormal(saved_denormal)
        random.setstate(saved_rng[0])
        np.random.set_state(saved_rng[1])
        torch.random.set_rng_state(saved_rng[2])
        for handler in root.handlers:
            if handler not in saved_handlers:
                handler.close()
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        GlobalHydra.instance().clear()
    return CliResult(returncode, stdout.getvalue(), stderr.getvalue(), Path(job_dirs[-1]) if job_dirs else None)


@contextlib.contextmanager
def _recording_job_dirs(job_dirs: list[str]):
    """Note the output dir of every job Hydra starts (run_job hands its config to HydraConfig once it is set)."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    original = HydraConfig.set_config

    def set_config(self, cfg):
        original(self, cfg)
        output_dir = OmegaConf.select(cfg, "hydra.runtime.output_dir", default=None, throw_on_missing=False)
        if output_dir and output_dir not in job_dirs:
            job_dirs.append(output_dir)

    HydraConfig.set_config = set_config
    try:
        yield
    finally:
        HydraConfig.set_config = original


def one_line_error(result: CliResult | subprocess.CompletedProcess) -> str:
    """The single non-blank stderr line of a run that stopped on bad input with exit code 2."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, (result.returncode, result.stderr)
    return lines[0]


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array in the IDX ("Pascal Vincent") format that MNIST's files use."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def write_fake_mnist(root: Path, n_train: int = 120, n_test: int = 40, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Random 28x28 digits under root/MNIST/raw in the four files torchvision's MNIST reads."""
    rng = np.random.default_rng(seed)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    arrays = (
        rng.integers(0, 256, (n_train, 28, 28)),
        rng.integers(0, 10, n_train),
        rng.integers(0, 256, (n_test, 28, 28)),
        rng.integers(0, 10, n_test),
    )
    names = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    for name, array in zip(names, arrays):
        write_idx(raw / name, array.astype(np.uint8))
    return tuple(a.astype(np.uint8) for a in arrays)


def read_metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def write_fake_cifar10(root: Path, n_train_per_batch: int = 20, n_test: int = 30, seed: int = 0) -> None:
    """Random images under root/cifar-10-batches-py in the pickled batch format torchvision's CIFAR10 reads
    (protocol-2 pickles of dicts with "data" uint8 (N, 3072) and "labels", as the official files hold)."""
    import pickle

    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    batches = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in batches:
        count = n_test if name == "test_batch" else n_train_per_batch
        payload = {
            "batch_label": name,
            "data": rng.integers(0, 256, (count, 3072), dtype=np.uint8),
            "labels": rng.integers(0, 10, count).tolist(),
        }
        (folder / name).write_bytes(pickle.dumps(payload, protocol=2))
    meta = {
        "label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
        "num_vis": 3072,
    }
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))


def smoke_overrides(model: str, task: str, data_dir: Path) -> list[str]:
    """`debug=smoke model=M task=T` plus what makes it tiny and offline: small models, bundled digits, fake CIFAR."""
    return ["debug=smoke", f"model={model}", f"task={task}", *smoke_data_overrides(model, task, data_dir)]


def smoke_data_overrides(model: str, task: str, data_dir: Path) -> list[str]:
    """The size and data overrides of `smoke_overrides`, for runs that choose model and task another way."""
    overrides = [f"paths.data_dir={data_dir}"]
    if model_takes(model, "hidden_size"):
        overrides.append("model.hidden_size=8")
    if task in ("smnist", "psmnist", "mnist"):
        overrides += ["task.source=bundled", "task.download=false"]
    if task in ("smnist", "psmnist"):
        overrides.append("task.image_size=14")
    if task == "cifar10":
        write_fake_cifar10(data_dir)
        overrides += ["task.download=false", "task.val_size=20"]
    if task == "parity":
        overrides += ["task.n_train=64", "task.n_val=32", "task.n_test=32", "task.test_lengths=[8,40,64]"]
    if task == "adding":  # "++": the adding experiments share a smoke multirun, whose first compose has no task.n_*
        overrides += ["++task.n_train=64", "++task.n_val=32", "++task.n_test=32"]
    return overrides


def model_takes(model: str, key: str) -> bool:
    """Whether the model config (or the config it extends) sets `key`."""
    from importlib import resources

    from omegaconf import OmegaConf

    folder = resources.files("organics_bench.conf").joinpath("model")
    cfg = OmegaConf.create(folder.joinpath(f"{model}.yaml").read_text())
    parents = [d for d in cfg.get("defaults", []) if d != "_self_"]
    return key in cfg or any(model_takes(parent, key) for parent in parents)


def composed_config(overrides: list[str]):
    """The composed config with its hydra node, and HydraConfig set so that ${hydra:...} resolves."""
    from hydra import compose, initialize_config_module
    from hydra.core.hydra_config import HydraConfig

    with initialize_config_module("organics_bench.conf", version_base="1.3"):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        return cfg


def composed(overrides: list[str]):
    """The resolved job config (without the hydra node) and the chosen model's name."""
    from omegaconf import OmegaConf

    from organics_bench.training.records import job_config

    cfg = composed_config(overrides)
    return OmegaConf.create(job_config(cfg)), cfg.hydra.runtime.choices.model
