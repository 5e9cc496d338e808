"""Results and where they go: a training run's record (`RunRecord`), the provenance every result carries, and
publishing runs, evaluations and theory experiments into results/ (docs/runs.md)."""

from __future__ import annotations

import hashlib
import inspect
import json
import platform
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache, cached_property
from pathlib import Path

import torch
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf
from torch import nn

from organics_bench.io import copy_atomic, write_json_atomic
from organics_bench.models.base import count_trainable
from organics_bench.tasks.base import SummarizesExtraTests, TaskData

SCHEMA_VERSION = 1
FINISHED = ("ok", "diverged")  # a run that ended on its own: a result (a divergence is one); others can continue
PACKAGE_DIR = Path(__file__).resolve().parents[1]
# What a run computes: these config sections, less the keys that only say where or how fast it runs or what extra it
# keeps (the model's engines and solvers are tested to give the same numbers as their reference forms).
BEHAVIOUR_SECTIONS = ("model", "task", "trainer", "optimizer", "scheduler")
NOT_BEHAVIOUR = {
    "task": ("data_dir", "download"),
    "trainer": ("device", "progress_bar", "num_threads", "keep_epochs_from"),
    "model": ("engine", "fixed_point_solver"),
}


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
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=directory, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ":(top)", ":(top,exclude)results"],
            cwd=directory,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return rev + ("+dirty" if dirty else "")


@cache
def model_code_hash() -> str:
    """A short hash of the model code (organics_bench/models: Python, C and C++ sources): what a run's numbers depend
    on beside its config, so that a run continued by other model code says so."""
    digest = hashlib.sha1()
    for path in sorted(p for pattern in ("*.py", "*.c", "*.cpp") for p in (PACKAGE_DIR / "models").glob(pattern)):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:10]


def environment(device: str) -> dict:
    """Software and hardware the run used."""
    hardware = (
        torch.cuda.get_device_name(device)
        if device.startswith("cuda")
        else (f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads")
    )
    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "device": device,
        "hardware": hardware,
        "host": platform.node(),
        "platform": platform.platform(),
        "flush_denormal": flushes_denormals(),
    }


def flushes_denormals() -> bool:
    """Whether this thread's CPU arithmetic treats subnormal floats as zero (torch.set_flush_denormal)."""
    return torch.tensor([1e-39], dtype=torch.float32).mul(1.0).item() == 0.0


@dataclass
class RunRecord:
    """The results record of one training run (metrics.json; schema in docs/runs.md): who the run is, what produced
    it, and what came out. Built once per run (`for_job`); the trainer writes it with its summary after every epoch
    and at the end; `publish` copies it, with the run's history and figures, into results/."""

    experiment: str
    model: str
    task: str
    seed: int
    config: dict
    provenance: dict
    n_params: int
    epochs_planned: int
    data: dict = field(default_factory=dict)
    segments: list[dict] = field(default_factory=list)
    summarize_extra_tests: Callable[[dict[str, float]], dict] | None = field(default=None, repr=False)

    @classmethod
    def for_job(
        cls,
        config: dict,
        model_name: str,
        model: nn.Module,
        task: object,
        data: TaskData,
        provenance: dict,
        segments: list[dict],
    ) -> RunRecord:
        """The record of the job `config` (resolved) training `model` on `task`'s `data`; `segments` (`Segment`) say
        which engine and model code trained which epochs."""
        spec = task.spec
        return cls(
            experiment=config["experiment_name"],
            model=model_name,
            task=config["task"]["name"],
            seed=config["seed"],
            config=config,
            provenance=provenance,
            n_params=count_trainable(model),
            epochs_planned=config["trainer"]["epochs"],
            data={
                "spec": vars(spec) | {"metrics": list(spec.metrics), "input_shape": list(spec.input_shape)},
                **data.record,
            },
            segments=segments,
            summarize_extra_tests=task.summarize if isinstance(task, SummarizesExtraTests) else None,
        )

    @cached_property
    def config_hash(self) -> str:
        """`config_hash` of the run's config: what groups it with the other seeds of the same config."""
        return config_hash(self.config)

    @cached_property
    def checkpoint_identity(self) -> dict:
        """What every checkpoint of the run carries to be resumed or evaluated: model, task, resolved config, and the
        engines and model code that trained it so far."""
        return {
            "model_name": self.model,
            "task_name": self.task,
            "config_yaml": OmegaConf.to_yaml(OmegaConf.create(self.config)),
            "segments": self.segments,
        }

    def as_dict(self, summary: dict) -> dict:
        """The record with the trainer's `summary` (status, metrics, gradient norms, times) filled in."""
        if summary.get("extra_tests") and self.summarize_extra_tests:
            summary = summary | {"extra_tests": self.summarize_extra_tests(summary["extra_tests"])}
        return {
            "schema_version": SCHEMA_VERSION,
            "task": self.task,
            "model": self.model,
            "experiment": self.experiment,
            "seed": self.seed,
            **summary,
            "n_params": self.n_params,
            "epochs_planned": self.epochs_planned,
            "command": self.provenance["command"],
            "git_revision": self.provenance["git_revision"],
            "external_code": self.provenance["external_code"],
            "segments": self.segments,
            "env": self.provenance["env"],
            "data": self.data,
            "config_hash": self.config_hash,
            "config": self.config,
        }

    def write(self, run_dir: Path, summary: dict) -> dict:
        """Write metrics.json (atomically) into `run_dir`; returns the record written."""
        record = self.as_dict(summary)
        write_json_atomic(record, run_dir / "metrics.json")
        return record


def segment(from_epoch: int, engine: str, git_revision: str) -> dict:
    """One stretch of a run's training, from epoch `from_epoch` on: the engine that computed it (`engine_backend`),
    the model code (`model_code_hash`) and the suite's git revision."""
    return {"from_epoch": from_epoch, "engine": engine, "model_code": model_code_hash(), "git_revision": git_revision}


def provenance(overrides: Sequence[str], device: str, config: dict | None = None) -> dict:
    """What produced a result: the command that repeats it, the suite's git revision, the code from outside the
    suite that a training or evaluation `config` (resolved) builds (`external_code`), software and hardware."""
    return {
        "command": " ".join(["organics-bench", *overrides]),
        "git_revision": git_revision(PACKAGE_DIR),
        "external_code": external_code(config) if config else [],
        "env": environment(device),
    }


def external_code(config: dict) -> list[dict]:
    """The model's and the task's classes that come from outside the suite (`_target_` in a module that is not
    under organics_bench/): per section, the target, its module's file and the sha256 of that file."""
    found = []
    for section in ("model", "task"):
        target = (config.get(section) or {}).get("_target_")
        origin = Path(inspect.getfile(get_class(target))).resolve() if target else None
        if origin and PACKAGE_DIR not in origin.parents:
            digest = hashlib.sha256(origin.read_bytes()).hexdigest()
            found.append({"section": section, "target": target, "file": str(origin), "sha256": digest})
    return found


def run_results_dir(results_dir: Path, experiment: str, model: str, config_hash_: str) -> Path:
    """results/runs/<experiment>/<model>/<config_hash>/: runs of different configs never overwrite each other."""
    return results_dir / "runs" / experiment / model / config_hash_


def snapshot_dir(results_dir: Path, experiment: str, seed: int) -> Path:
    """results/in_progress/<experiment>/seed<k>/: an unfinished long run's snapshot (`organics_bench.in_progress`)."""
    return results_dir / "in_progress" / experiment / f"seed{seed}"


def snapshot_figure(results_dir: Path, experiment: str, seed: int) -> Path:
    """results/figures/<experiment>.seed<k>.in_progress.png: the training curves of a snapshot."""
    return results_dir / "figures" / f"{experiment}.seed{seed}.in_progress.png"


def matching_snapshot(results_dir: Path, experiment: str, seed: int, config_hash_: str) -> Path | None:
    """The in-progress snapshot of `experiment`'s run of `seed`, if one is there for the config `config_hash_`."""
    snapshot = snapshot_dir(results_dir, experiment, seed)
    progress = snapshot / "progress.json"
    if not progress.is_file() or json.loads(progress.read_text())["config_hash"] != config_hash_:
        return None
    return snapshot


def retire_snapshot(results_dir: Path, record: dict) -> Path | None:
    """Delete the in-progress snapshot (and its figure) of the run that `record` finished, if one is there for the
    same experiment, seed and config; returns the deleted snapshot dir. An unfinished record retires nothing."""
    snapshot = matching_snapshot(results_dir, record["experiment"], record["seed"], record["config_hash"])
    if record["status"] not in FINISHED or snapshot is None:
        return None
    shutil.rmtree(snapshot)
    snapshot_figure(results_dir, record["experiment"], record["seed"]).unlink(missing_ok=True)
    if not any(snapshot.parent.iterdir()):
        snapshot.parent.rmdir()
    return snapshot


def publish(run_dir: Path, results_dir: Path, record: dict) -> Path:
    """Copy a run's record, history and figures to `run_results_dir` as seed<k>.*. Files a run did not get to write
    (a divergence in its first epoch has no history.csv) are left out."""
    target = run_results_dir(results_dir, record["experiment"], record["model"], record["config_hash"])
    seed = record["seed"]
    copies = [
        (run_dir / "metrics.json", f"seed{seed}.json"),
        (run_dir / "history.csv", f"seed{seed}.history.csv"),
        (run_dir / "steady_state_spectra.json", f"seed{seed}.steady_state_spectra.json"),
    ]
    copies += [(figure, f"seed{seed}.{figure.name}") for figure in sorted((run_dir / "figures").glob("*.png"))]
    _copy_existing(copies, target)
    diagnostics = collect_diagnostics(run_dir)
    if diagnostics["spectra"] or diagnostics["gradient_flow"]:
        write_json_atomic(diagnostics, target / f"seed{seed}.diagnostics.json")
    return target / f"seed{seed}.json"


def publish_evaluation(evaluation: Path, results_dir: Path, record: dict, checkpoint_name: str) -> Path:
    """Copy an evaluation.json beside its run's record, as seed<k>.evaluation.<best|last|epoch_k>.json."""
    target = run_results_dir(results_dir, record["experiment"], record["model"], record["config_hash"])
    name = f"seed{record['seed']}.evaluation.{checkpoint_name}.json"
    _copy_existing([(evaluation, name)], target)
    return target / name


def publish_theory(out_dir: Path, results_dir: Path, name: str) -> Path:
    """Copy a theory experiment's JSON and figures to results/theory/<name>/."""
    target = results_dir / "theory" / name
    _copy_existing([(p, p.name) for p in sorted(out_dir.glob("*.json")) + sorted(out_dir.glob("*.png"))], target)
    return target


def _copy_existing(copies: list[tuple[Path, str]], target: Path) -> None:
    for source, name in copies:
        if source.exists():
            copy_atomic(source, target / name)


def collect_diagnostics(run_dir: Path) -> dict[str, list[dict]]:
    """Every spectra/ and gradient_flow/ measurement of a run dir, in training order, as one JSON-ready dict."""
    return {
        folder: [json.loads(path.read_text()) for path in sorted((run_dir / folder).glob("step_*.json"))]
        for folder in ("spectra", "gradient_flow")
    }
