"""What a model class and a task must offer to run in the suite (docs/extending.md), checked before any run dir
exists: one line naming what is missing, instead of an AttributeError in the middle of a run."""

from __future__ import annotations

import importlib

from omegaconf import DictConfig
from torch import nn

from organics_bench.errors import UserError
from organics_bench.models.base import DynamicalModel
from organics_bench.tasks.base import TaskSpec

KINDS = ("sequence", "static")
MODEL_MEMBERS = ("kind", "loss", "recurrent_matrix")  # what `Classifier` gives every model
STEP_METHODS = ("initial_state", "step", "readout")  # what a `DynamicalModel` leaves to its subclass
TASK_MEMBERS = ("spec", "load")
MODEL_ADVICE = (
    "subclass organics_bench.models.base.DynamicalModel (initial_state, step, readout: every diagnostic) "
    "or Classifier (forward -> logits: training alone); docs/extending.md"
)


def target_class(section: str, node: DictConfig) -> type:
    """The class that `<section>._target_` (`module.Class`) names, or one line saying why it cannot be had."""
    target = node.get("_target_")
    if not target:
        raise UserError(f"the {section} config has no _target_ (the class to build); docs/extending.md")
    module_name, _, name = str(target).rpartition(".")
    try:
        found = getattr(importlib.import_module(module_name), name)
    except Exception as err:  # an import runs the module's code: any error can come out of it
        raise UserError(
            f"{section}._target_={target} cannot be imported ({type(err).__name__}: {err}); a module beside "
            "your configs is found when you pass their folder with --config-dir (docs/extending.md)"
        ) from None
    if not isinstance(found, type):
        raise UserError(f"{section}._target_={target} is a {type(found).__name__}, not a class")
    return found


def check_model_class(model_class: type, target: str) -> None:
    """A model is a `torch.nn.Module` with what `Classifier` gives (and, for a `DynamicalModel`, its own
    `initial_state`, `step` and `readout`) and a kind the tasks know."""
    missing = [] if issubclass(model_class, nn.Module) else ["torch.nn.Module as a base class"]
    missing += [name for name in MODEL_MEMBERS if not hasattr(model_class, name)]
    if issubclass(model_class, DynamicalModel):
        missing += [name for name in STEP_METHODS if getattr(model_class, name) is getattr(DynamicalModel, name)]
    if missing:
        raise UserError(
            f"model._target_={target} does not meet the model contract: it lacks {', '.join(missing)}; " + MODEL_ADVICE
        )
    if model_class.kind not in KINDS:
        raise UserError(f"model._target_={target} has kind {model_class.kind!r}; a model's kind is one of {KINDS}")


def check_task(task: object, target: str) -> None:
    """A task has a `spec` (a `TaskSpec`) and `load()` (its `TaskData`)."""
    missing = [name for name in TASK_MEMBERS if not hasattr(task, name)]
    if not missing and not isinstance(task.spec, TaskSpec):
        missing = ["a spec that is an organics_bench.tasks.base.TaskSpec"]
    if missing:
        raise UserError(
            f"task._target_={target} does not meet the task contract: it lacks {', '.join(missing)}; see "
            "organics_bench/tasks/base.py and docs/extending.md"
        )
