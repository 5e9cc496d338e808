"""Atomic checkpoints of tensors and primitives only, loadable with `weights_only=True`."""
from __future__ import annotations

import os
from pathlib import Path

import torch

from organics_bench.errors import UserError


def save_checkpoint(payload: dict, path: Path) -> None:
    """Write to a temporary file beside `path`, then rename, so a crash never leaves a half-written checkpoint."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def resolve_checkpoint_path(resume: str) -> Path:
    """`resume` may name a checkpoint file or a run directory (its checkpoints/last.pt is used)."""
    path = Path(resume).expanduser()
    if path.is_dir():
        path = path / "checkpoints" / "last.pt"
    if not path.is_file():
        raise UserError(f"no checkpoint at {path}: pass resume=<run dir> or resume=<path to a .pt checkpoint>")
    return path


def load_checkpoint(path: Path) -> dict:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for damaged or foreign files
        raise UserError(f"cannot read checkpoint {path}: it is damaged or not an organics-bench checkpoint "
                        f"({type(err).__name__})") from err
    if not isinstance(payload, dict) or "model_state" not in payload:
        raise UserError(f"{path} is not an organics-bench checkpoint (no model_state)")
    return payload


def check_compatible(payload: dict, model: torch.nn.Module, model_name: str, task_name: str, path: Path) -> None:
    """Refuse a checkpoint written by another model or task, naming both."""
    if payload.get("model_name") != model_name or payload.get("task_name") != task_name:
        raise UserError(f"checkpoint {path} was written by model={payload.get('model_name')} "
                        f"task={payload.get('task_name')}, not model={model_name} task={task_name}: "
                        "resume with the same model and task, or start a new run")
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in payload["model_state"].items()}
    if expected != found:
        diff = sorted(set(expected.items()) ^ set(found.items()))[:3]
        raise UserError(f"checkpoint {path} has other parameter shapes than this model "
                        f"(e.g. {diff}): use the same model settings (hidden_size, recurrence, ...) as that run")
