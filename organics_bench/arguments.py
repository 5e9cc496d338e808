"""The command line, checked and completed before Hydra runs: the `--config-dir`s' folders on the import path (so a
config there can name a module beside it), every `key=value` naming a key of the composed config, and the run dir
of `resume=` or `mode=evaluate checkpoint=` named after the stored run rather than the default task."""

from __future__ import annotations

import difflib
import sys
from collections.abc import Iterator, Sequence
from importlib import resources
from pathlib import Path

import yaml
from hydra import compose, initialize_config_module
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Glob, Override, OverrideType
from hydra.errors import HydraException
from omegaconf import OmegaConf

from organics_bench.errors import UserError
from organics_bench.training.checkpoint import load_checkpoint, resolve_checkpoint_path

RUN_STAMP = "${now:%Y-%m-%d_%H-%M-%S_%f}"  # as conf/config.yaml's hydra.run.dir ends


def config_dirs(argv: Sequence[str]) -> list[str]:
    """The folders given with `--config-dir DIR`, `-cd DIR` or `--config-dir=DIR`."""
    dirs = [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg in ("--config-dir", "-cd")]
    return dirs + [arg.split("=", 1)[1] for arg in argv if arg.startswith("--config-dir=")]


def import_from_config_dirs(argv: Sequence[str]) -> None:
    """Put each `--config-dir` folder first on `sys.path`: `_target_: my_rnn.MyRNN` finds my_rnn.py there."""
    for folder in reversed(config_dirs(argv)):
        path = str(Path(folder).expanduser().resolve())
        if path not in sys.path:
            sys.path.insert(0, path)


def overrides(argv: Sequence[str]) -> list[Override]:
    """The `key=value` arguments (not the flags, nor `--config-dir`'s value) parsed as Hydra parses them; [] where
    Hydra's own parser will refuse them, so that its message stands."""
    values = set(config_dirs(argv))
    candidates = [arg for arg in argv if "=" in arg and not arg.startswith("-") and arg not in values]
    try:
        return OverridesParser.create().parse_overrides(candidates)
    except HydraException:
        return []


def check_keys(argv: Sequence[str]) -> None:
    """One line naming a `key=value` whose key the composed config lacks, and the keys closest to it, instead of
    Hydra's block advising `+key=value` (which the config checks would then refuse)."""
    parsed = overrides(argv)
    groups = _group_names(config_dirs(argv))
    changes = [o for o in parsed if o.type == OverrideType.CHANGE and not _is_group(o, groups) and not _is_hydra(o)]
    if not changes:
        return
    chosen = [o for o in parsed if _is_group(o, groups) and not _is_hydra(o)]
    if any(isinstance(o.value(), Glob) for o in chosen):
        return
    choices = [f"{o.get_key_element()}={_first_value(o)}" if o.is_sweep_override() else o.input_line for o in chosen]
    search_path = [f"file://{Path(d).expanduser().resolve()}" for d in config_dirs(argv)]
    try:
        with initialize_config_module("organics_bench.conf", version_base="1.3"):
            config = compose("config", overrides=[*choices, f"hydra.searchpath=[{','.join(search_path)}]"])
    except HydraException:
        return  # an unknown or unreadable choice: the choice check or Hydra says so
    keys = list(_dotted_keys(OmegaConf.to_container(config, resolve=False)))
    for override in changes:
        key = override.key_or_group
        if key not in keys and not any(k.startswith(f"{key}.") for k in keys):
            close = difflib.get_close_matches(key, keys, n=3)
            hint = f"close matches: {', '.join(close)}" if close else "`organics-bench --cfg job` lists every key"
            raise UserError(f"{key} is not a config key; {hint}")


def stored_run_dir(argv: Sequence[str]) -> str | None:
    """`hydra.run.dir=...` naming the new run dir after the stored run's experiment and run name, for a single
    `resume=<run>` or `mode=evaluate checkpoint=<run>` without a run dir of its own; None otherwise (and where the
    checkpoint cannot be read: the job refuses it in one line)."""
    if any(arg in ("-m", "--multirun") for arg in argv):
        return None
    values = {o.key_or_group: o.value() for o in overrides(argv) if not o.is_sweep_override()}
    if any(key.startswith("hydra.run") for key in values):
        return None
    try:
        if values.get("resume"):
            path = resolve_checkpoint_path(str(values["resume"]))
        elif values.get("mode") == "evaluate" and values.get("checkpoint"):
            path = Path(str(values["checkpoint"])).expanduser()
            path = path / "checkpoints" / "best.pt" if path.is_dir() else path
            if not path.is_file():
                return None
        else:
            return None
        stored = yaml.safe_load(load_checkpoint(path, resumable=False)["config_yaml"]) or {}
    except UserError:
        return None
    experiment, run_name = stored.get("experiment_name"), stored.get("run_name")
    if not experiment or not run_name:
        return None
    return f"hydra.run.dir='${{paths.output_dir}}/runs/{experiment}/{run_name}_{RUN_STAMP}'"


def _group_names(dirs: Sequence[str]) -> set[str]:
    folders = [resources.files("organics_bench.conf"), *(Path(d) for d in dirs)]
    return {entry.name for folder in folders if folder.is_dir() for entry in folder.iterdir() if entry.is_dir()}


def _is_group(override: Override, groups: set[str]) -> bool:
    return override.key_or_group in groups or "/" in override.key_or_group


def _is_hydra(override: Override) -> bool:
    return override.key_or_group.split(".")[0].split("/")[0] == "hydra"


def _first_value(override: Override) -> str:
    return next(override.sweep_string_iterator())


def _dotted_keys(node: object, prefix: str = "") -> Iterator[str]:
    """Every key of a config as Hydra's overrides name it: `trainer.epochs`, `task.test_lengths.0`."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        if key != "hydra":
            yield f"{prefix}{key}"
            yield from _dotted_keys(value, f"{prefix}{key}.")
