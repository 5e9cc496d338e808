"""What a valid config is, checked in one pass before Hydra writes any file.

Every key a user can set has a type and a range: the trainer, optimizer, scheduler and diagnostics keys from
`RULES`; the model's and the task's keys from their constructors' type hints (integers count things and must be
>= 1 unless `RULES_BY_NAME` says otherwise; `dt*` ratios lie in (0, 1]). The task and the model are then built
(without data) so that their own checks, e.g. a recurrence name, run before anything is written.
"""

from __future__ import annotations

import inspect
import math
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

from organics_bench.contracts import check_model_class, check_task, target_class
from organics_bench.errors import UserError
from organics_bench.settings import DiagnosticsSettings, TrainerSettings


@dataclass(frozen=True)
class Rule:
    """A value's type ("int", "number", "bool", "str", "numbers" for a list of numbers) and range."""

    kind: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    nullable: bool = False

    def problem(self, value: Any) -> str | None:
        """None when `value` is valid, else what it must be."""
        if value is None:
            return None if self.nullable else f"must be {self.describe()}"
        if self.kind == "numbers":
            items = list(value) if isinstance(value, (list, tuple, ListConfig)) else None
            ok = items is not None and all(
                Rule("number", self.low, self.high, self.low_open).problem(v) is None for v in items
            )
            return None if ok else f"must be {self.describe()}"
        if not self._has_type(value) or not self._in_range(value):
            return f"must be {self.describe()}"
        return None

    def _has_type(self, value: Any) -> bool:
        if self.kind == "bool":
            return isinstance(value, bool)
        if self.kind == "str":
            return isinstance(value, str)
        if isinstance(value, bool):
            return False
        if self.kind == "int":
            return isinstance(value, int)
        return isinstance(value, (int, float)) and math.isfinite(value)

    def _in_range(self, value: Any) -> bool:
        if self.kind in ("bool", "str"):
            return True
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or value <= self.high

    def describe(self) -> str:
        noun = {
            "int": "an integer",
            "number": "a number",
            "bool": "true or false",
            "str": "a string",
            "numbers": "a list of numbers",
        }[self.kind]
        if self.low is not None and self.high is not None:
            noun += f" in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}]"
        elif self.low is not None:
            noun += f" {'>' if self.low_open else '>='} {self.low:g}"
        elif self.high is not None:
            noun += f" <= {self.high:g}"
        return noun + (" or null" if self.nullable else "")


COUNT = Rule("int", low=1)
POSITIVE = Rule("number", low=0, low_open=True)
FLAG = Rule("bool")
FRACTION = Rule("number", low=0, high=1, low_open=True)
RULES: dict[str, Rule] = {
    "seed": Rule("int", low=0),
    "publish": FLAG,
    "skip_published": FLAG,
    "smoke": FLAG,
    "resume": Rule("str", nullable=True),
    "checkpoint": Rule("str", nullable=True),
    "trainer.epochs": COUNT,
    "trainer.batch_size": COUNT,
    "trainer.eval_batch_size": COUNT,
    "trainer.limit_train_batches": Rule("int", low=1, nullable=True),
    "trainer.limit_eval_batches": Rule("int", low=1, nullable=True),
    "trainer.num_threads": Rule("int", low=1, nullable=True),
    "trainer.keep_epochs_from": Rule("int", low=1, nullable=True),
    "trainer.device": Rule("str"),
    "trainer.progress_bar": FLAG,
    "trainer.flush_denormal": FLAG,
    "optimizer.lr": POSITIVE,
    "optimizer.weight_decay": Rule("number", low=0),
    "scheduler.step_size": COUNT,
    "scheduler.gamma": FRACTION,
    "scheduler.factor": FRACTION,
    "diagnostics.enabled": FLAG,
    "diagnostics.every_n_steps": COUNT,
    "diagnostics.probe_size": COUNT,
    "diagnostics.spectra_at": Rule("numbers", low=0, high=1, low_open=True),
    "diagnostics.gradient_flow": FLAG,
    "diagnostics.trajectories": FLAG,
    "diagnostics.final_inputs": COUNT,
}
# Model and task keys whose range is not the default for their type.
RULES_BY_NAME: dict[str, Rule] = {
    "seed": Rule("int", low=0),
    "split_seed": Rule("int", low=0),
    "permutation_seed": Rule("int", low=0),
    "curriculum_epochs": Rule("int", low=0),
    "val_size": Rule("int", low=1, nullable=True),
}
DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?|mps")
MODES = ("train", "evaluate", "theory")


def validate(cfg: DictConfig, model_name: str | None) -> None:
    """Raise a one-line `UserError` for the first key whose value is invalid."""
    for key, rule in RULES.items():
        value = OmegaConf.select(cfg, key, default=_ABSENT)
        if value is not _ABSENT and (problem := rule.problem(value)):
            raise UserError(f"{key} {problem}, got {value!r}")
    if cfg.mode not in MODES:
        raise UserError(f"mode must be one of {', '.join(MODES)}, got {cfg.mode!r}")
    if not DEVICE.fullmatch(cfg.trainer.device):
        raise UserError(f"trainer.device must be auto, cpu, cuda, cuda:<index> or mps, got {cfg.trainer.device!r}")
    for section, settings in (("trainer", TrainerSettings), ("diagnostics", DiagnosticsSettings)):
        _check_known_keys(section, cfg[section], {f.name for f in fields(settings)})
    if cfg.mode == "theory":
        from organics_bench.theory.settings import from_config

        construct("theory", lambda: from_config(cfg.theory))
    if cfg.mode != "train":
        return
    if "name" not in cfg.task:
        raise UserError("the task config has no name (what run dirs and records call the task); docs/extending.md")
    for section in ("task", "model"):
        _check_constructor_keys(section, cfg[section])
    check_model_class(target_class("model", cfg.model), cfg.model._target_)
    from organics_bench.models.build import build_model

    task = construct("task", lambda: instantiate(cfg.task, _convert_="all"))
    check_task(task, cfg.task._target_)
    construct("model", lambda: build_model(cfg.model, task.spec, model_name or "model", cfg.task.name))


def construct(section: str, build: Callable[[], Any]) -> Any:
    """Call `build` (a Hydra instantiate, or a call of what it made); a bad value found by a constructor
    (UserError, ValueError, or TypeError for a wrong argument) becomes one line naming `section`."""
    try:
        return build()
    except (InstantiationException, ValueError) as err:
        cause = err.__cause__ if isinstance(err, InstantiationException) else err
        if isinstance(cause, UserError):
            raise cause from None
        if isinstance(cause, (ValueError, TypeError)):
            raise UserError(f"{section}: {cause}") from None
        raise


def _check_known_keys(section: str, node: DictConfig, known: set[str]) -> None:
    unknown = sorted(set(node) - known)
    if unknown:
        raise UserError(
            f"{section}.{unknown[0]} is not a {section} setting; the settings are: {', '.join(sorted(known))}"
        )


def _check_constructor_keys(section: str, node: DictConfig) -> None:
    """Types from the constructor's hints, ranges from `RULES_BY_NAME` or the type's default."""
    target = target_class(section, node)
    parameters = inspect.signature(target).parameters
    hints = typing.get_type_hints(target.__init__)
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    for key in node:
        if key.startswith("_"):
            continue
        if key not in parameters:
            if takes_any:
                continue
            names = [name for name in parameters if name not in ("d_input", "n_classes", "seq_len", "input_shape")]
            raise UserError(
                f"{section}.{key} is not a setting of {target.__name__}; its settings are: {', '.join(names)}"
            )
        rule = _rule_for(key, hints.get(key))
        value = node[key]
        if rule and (problem := rule.problem(value)):
            raise UserError(f"{section}.{key} {problem}, got {value!r}")


def _rule_for(name: str, hint: Any) -> Rule | None:
    nullable = False
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        options = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        nullable = len(options) < len(typing.get_args(hint))
        hint = options[0] if len(options) == 1 else None
    if name in RULES_BY_NAME:
        return RULES_BY_NAME[name]
    if hint is bool:
        return Rule("bool", nullable=nullable)
    if hint is int:
        return Rule("int", low=1, nullable=nullable)
    if hint is float:
        if name.startswith("dt"):
            return Rule("number", low=0, high=1, low_open=True, nullable=nullable)
        return Rule("number", nullable=nullable)
    if hint is str:
        return Rule("str", nullable=nullable)
    return None


_ABSENT = object()
