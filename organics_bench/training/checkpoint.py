"""Atomic checkpoints of tensors and primitives only, loadable with `weights_only=True`."""

from __future__ import annotations

from pathlib import Path

import torch
import yaml
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from organics_bench.errors import UserError
from organics_bench.io import atomic_path
from organics_bench.training.records import NOT_BEHAVIOUR

# Config sections a resumed run takes from the command line: where it reads and writes, what it logs and measures.
FREE_SECTIONS = ("paths", "logger", "diagnostics")
# Top-level keys about what a job does with the run, not what the run computes: always the command line's
FREE_KEYS = ("mode", "resume", "checkpoint", "publish")
# Config groups whose stored node replaces the command line's whole: merged, another task's or model's keys would stay
REPLACED_SECTIONS = ("model", "task", "optimizer", "scheduler")


def save_checkpoint(payload: dict, path: Path) -> None:
    """Write atomically (`organics_bench.io.atomic_path`): a crash never leaves a half-written checkpoint."""
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def resolve_checkpoint_path(resume: str) -> Path:
    """`resume` may name a checkpoint file or a run directory (its checkpoints/last.pt is used)."""
    path = Path(resume).expanduser()
    if path.is_dir():
        path = path / "checkpoints" / "last.pt"
    if not path.is_file():
        raise UserError(f"no checkpoint at {path}: pass resume=<run dir> or resume=<path to a .pt checkpoint>")
    return path


def load_checkpoint(path: Path, resumable: bool = True) -> dict:
    """A checkpoint's payload, refused in one line if damaged, foreign or (when `resumable`) weights only."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for damaged or foreign files
        raise UserError(
            f"cannot read checkpoint {path}: it is damaged or not an organics-bench checkpoint ({type(err).__name__})"
        ) from err
    if not isinstance(payload, dict) or "model_state" not in payload:
        raise UserError(f"{path} is not an organics-bench checkpoint (no model_state)")
    if resumable and "optimizer_state" not in payload:
        raise UserError(
            f"{path} holds only a model's weights (best.pt), not a run's state: resume from its run dir "
            "or its checkpoints/last.pt"
        )
    return payload


def resumed_config(cfg: DictConfig, payload: dict, overrides: list[str], path: Path) -> DictConfig:
    """The config a resumed run continues with: the run's own (stored in its checkpoint) for what it computes;
    the command line's for where and how fast it runs, what it logs and measures (`FREE_SECTIONS`,
    `NOT_BEHAVIOUR`) and, when given, `trainer.epochs`. Any other override that disagrees with the run is refused:
    it would be recorded but not applied (the optimizer's state carries the run's learning rate)."""
    stored = yaml.safe_load(payload["config_yaml"])
    current = OmegaConf.to_container(cfg, resolve=True)
    explicit = [o.split("=", 1)[0].lstrip("+~") for o in overrides if "=" in o]
    stored_cfg = OmegaConf.create(stored)
    group_values = {
        "model": (payload.get("model_name"), HydraConfig.get().runtime.choices.get("model")),
        "task": (stored["task"]["name"], current["task"]["name"]),
        "experiment": (stored.get("experiment_name"), current.get("experiment_name")),
    }
    for key in explicit:
        if key in group_values:
            was, now = group_values[key]
        elif _is_free(key) or key == "trainer.epochs":
            continue
        else:
            was, now = OmegaConf.select(stored_cfg, key), OmegaConf.select(cfg, key)
        if was != now:
            raise UserError(
                f"{key}={now} differs from the run being resumed ({path}: {key}={was}); a resumed run "
                "continues as it was configured (only trainer.epochs and where/how-fast settings may "
                "change): drop the override or start a new run"
            )
    merged = stored_config(cfg, payload)
    if "trainer.epochs" in explicit:
        merged.trainer.epochs = cfg.trainer.epochs
    return merged


def stored_config(cfg: DictConfig, payload: dict) -> DictConfig:
    """The config stored in a checkpoint for what the run computes, with `cfg`'s (the command line's) where and
    how-fast settings (`FREE_SECTIONS`, `NOT_BEHAVIOUR`) and top-level keys (mode, resume, checkpoint, publish)."""
    stored = yaml.safe_load(payload["config_yaml"])
    current = OmegaConf.to_container(cfg, resolve=True)
    merged = OmegaConf.create(stored)
    for section in FREE_SECTIONS:
        merged[section] = current[section]
    for section, keys in NOT_BEHAVIOUR.items():
        for key in keys:
            if key in current[section] and key in merged[section]:
                merged[section][key] = current[section][key]
    for key in FREE_KEYS:
        merged[key] = current.get(key)
    result = OmegaConf.merge(current, merged)  # keys added to the configs since the run keep their defaults
    for section in REPLACED_SECTIONS:  # the run's choice of model, task, ...: not merged into today's default one
        result[section] = merged[section]
    return result


def _is_free(key: str) -> bool:
    section, _, leaf = key.partition(".")
    return key in FREE_KEYS or section in FREE_SECTIONS or leaf in NOT_BEHAVIOUR.get(section, ()) or section == "hydra"


def check_compatible(payload: dict, model: torch.nn.Module, model_name: str, task_name: str, path: Path) -> None:
    """Refuse a checkpoint written by another model or task, naming both."""
    if payload.get("model_name") != model_name or payload.get("task_name") != task_name:
        raise UserError(
            f"checkpoint {path} was written by model={payload.get('model_name')} "
            f"task={payload.get('task_name')}, not model={model_name} task={task_name}: "
            "resume with the same model and task, or start a new run"
        )
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in payload["model_state"].items()}
    if expected != found:
        diff = sorted(set(expected.items()) ^ set(found.items()))[:3]
        raise UserError(
            f"checkpoint {path} has other parameter shapes than this model "
            f"(e.g. {diff}): use the same model settings (hidden_size, recurrence, ...) as that run"
        )
