"""The results record of a run: what was run, where, on what, and what came out (schema of DESIGN.md)."""
from __future__ import annotations

import hashlib
import json
import platform
import subprocess
import sys
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from organics_bench.io import copy_atomic, write_json_atomic

SCHEMA_VERSION = 1
# What a run computes: these config sections, less the keys that only say where or how fast it runs or what extra it
# keeps (the model's engines and solvers are tested to give the same numbers as their reference forms).
BEHAVIOUR_SECTIONS = ("model", "task", "trainer", "optimizer", "scheduler")
NOT_BEHAVIOUR = {"task": ("data_dir", "download"),
                 "trainer": ("device", "progress_bar", "num_threads", "keep_epochs_from"),
                 "model": ("engine", "fixed_point_solver")}


def job_config(cfg: DictConfig) -> dict:
    """A composed config without its `hydra` node, resolved to plain containers: what a job runs and records."""
    return OmegaConf.to_container(OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"]), resolve=True)


def config_hash(config: dict) -> str:
    """A short hash of what a resolved config computes (`BEHAVIOUR_SECTIONS` less `NOT_BEHAVIOUR`): runs that share
    it differ only in seed, paths, logging or speed settings, so they can be averaged."""
    behaviour = {}
    for section in BEHAVIOUR_SECTIONS:
        values = dict(config.get(section) or {})
        for key in NOT_BEHAVIOUR.get(section, ()):
            values.pop(key, None)
        behaviour[section] = values
    return hashlib.sha1(json.dumps(behaviour, sort_keys=True, default=str).encode()).hexdigest()[:10]


def git_revision(directory: Path) -> str:
    """`git rev-parse HEAD` of the checkout holding `directory`, with "+dirty" for uncommitted changes to tracked files
    outside results/ (the committed outputs, which regenerating rewrites, are not code)."""
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=directory, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ":(top)",
                                ":(top,exclude)results"], cwd=directory, capture_output=True, text=True, timeout=10,
                               check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return rev + ("+dirty" if dirty else "")


def environment(device: str) -> dict:
    """Software and hardware the run used."""
    hardware = torch.cuda.get_device_name(device) if device.startswith("cuda") else (
        f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads")
    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "device": device,
        "hardware": hardware,
        "host": platform.node(),
        "platform": platform.platform(),
        "flush_denormal": _flushes_denormals(),
    }


def _flushes_denormals() -> bool:
    """Whether this thread's CPU arithmetic treats subnormal floats as zero (torch.set_flush_denormal)."""
    return torch.tensor([1e-39], dtype=torch.float32).mul(1.0).item() == 0.0


def build_record(*, identity: dict, summary: dict, n_params: int, epochs_planned: int, command: str,
                 git: str, env: dict, task_record: dict, config: dict) -> dict:
    return {
        "schema_version": SCHEMA_VERSION,
        **identity,
        **summary,
        "n_params": n_params,
        "epochs_planned": epochs_planned,
        "command": command,
        "git_revision": git,
        "env": env,
        "data": task_record,
        "config_hash": config_hash(config),
        "config": config,
    }


def publish(run_dir: Path, results_dir: Path, record: dict) -> Path:
    """Copy a run's record, history and figures to results/runs/<experiment>/<model>/<config_hash>/seed<k>.*: runs
    of different configs never overwrite each other. Files a run did not get to write (a divergence in its first
    epoch has no history.csv) are left out."""
    target = results_dir / "runs" / record["experiment"] / record["model"] / record["config_hash"]
    seed = record["seed"]
    copies = [(run_dir / "metrics.json", f"seed{seed}.json"), (run_dir / "history.csv", f"seed{seed}.history.csv"),
              (run_dir / "steady_state_spectra.json", f"seed{seed}.steady_state_spectra.json")]
    copies += [(figure, f"seed{seed}.{figure.name}") for figure in sorted((run_dir / "figures").glob("*.png"))]
    for source, name in copies:
        if source.exists():
            copy_atomic(source, target / name)
    diagnostics = collect_diagnostics(run_dir)
    if diagnostics["spectra"] or diagnostics["gradient_flow"]:
        write_json_atomic(diagnostics, target / f"seed{seed}.diagnostics.json")
    return target / f"seed{seed}.json"


def collect_diagnostics(run_dir: Path) -> dict[str, list[dict]]:
    """Every spectra/ and gradient_flow/ measurement of a run dir, in training order, as one JSON-ready dict."""
    return {folder: [json.loads(path.read_text()) for path in sorted((run_dir / folder).glob("step_*.json"))]
            for folder in ("spectra", "gradient_flow")}
