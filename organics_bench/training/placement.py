"""Where a job runs: its device and its CPU threads, so that jobs a launcher runs side by side on one machine
(hydra/launcher=joblib) neither share one GPU nor oversubscribe the cores."""

from __future__ import annotations

import os

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode


def job_slot() -> tuple[int, int]:
    """(this job's number, how many jobs run at once on this machine): (job.num, n_jobs) under the joblib
    launcher, else (0, 1) (a single run, the basic launcher's one-at-a-time jobs, or one SLURM task)."""
    if not HydraConfig.initialized():
        return 0, 1
    hydra_cfg = HydraConfig.get()
    launcher = str(hydra_cfg.launcher.get("_target_", ""))
    if hydra_cfg.mode != RunMode.MULTIRUN or "JoblibLauncher" not in launcher:
        return 0, 1
    n_jobs = hydra_cfg.launcher.n_jobs
    return hydra_cfg.job.num, (os.cpu_count() or 1) if n_jobs == -1 else max(1, n_jobs)


def resolve_device(device: str) -> str:
    """ "auto" means CUDA when available (under joblib with several GPUs, GPU <job number mod GPU count>), else CPU."""
    if device != "auto":
        return device
    if not torch.cuda.is_available():
        return "cpu"
    count = torch.cuda.device_count()
    return f"cuda:{job_slot()[0] % count}" if count > 1 else "cuda"


def resolve_threads(num_threads: int | None) -> int | None:
    """The torch CPU threads of this job: `num_threads` if set; under joblib, this machine's cores shared evenly
    among the jobs running at once; else None (torch's default)."""
    if num_threads is not None:
        return num_threads
    _, parallel = job_slot()
    return max(1, (os.cpu_count() or 1) // parallel) if parallel > 1 else None
