"""Build a model from its config and the task's spec, and say clearly when a model cannot take a task."""

from __future__ import annotations

import inspect
from collections import defaultdict
from importlib import resources

from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from organics_bench.errors import UserError
from organics_bench.models.base import Classifier

SPEC_FIELDS = ("d_input", "n_classes", "seq_len", "input_shape")


def build_model(model_cfg: DictConfig, spec, model_name: str, task_name: str) -> Classifier:
    """Instantiate `model_cfg`, passing the spec fields (d_input, n_classes, ...) its constructor accepts."""
    model_class = get_class(model_cfg._target_)
    if model_class.kind != spec.kind:
        fitting = ", ".join(model_choices_by_kind()[spec.kind])
        raise UserError(
            f"model={model_name} takes {model_class.kind} tasks but task={task_name} is a {spec.kind} "
            f"task; models for {spec.kind} tasks: {fitting}"
        )
    accepted = inspect.signature(model_class).parameters
    dims = {field: getattr(spec, field) for field in SPEC_FIELDS if field in accepted}
    return instantiate(model_cfg, **dims)


def model_choices_by_kind() -> dict[str, list[str]]:
    """{"sequence": [...], "static": [...]}: every `model=` choice under the kind of task it takes."""
    folder = resources.files("organics_bench.conf").joinpath("model")
    configs = {
        entry.name[:-5]: OmegaConf.create(entry.read_text())
        for entry in folder.iterdir()
        if entry.name.endswith(".yaml")
    }
    by_kind = defaultdict(list)
    for name in sorted(configs):
        cfg = configs[name]
        while "_target_" not in cfg:  # a variant: follow its first default to the base config
            cfg = configs[next(d for d in cfg.defaults if d != "_self_")]
        by_kind[get_class(cfg._target_).kind].append(name)
    return dict(by_kind)
