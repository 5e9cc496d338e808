"""The `organics-bench` command: `organics-bench model=organics task=psmnist [overrides]` (Hydra 1.3).

`organics-bench --help` lists the config groups and their choices; `--cfg job` prints the composed config.
"""
from __future__ import annotations

import os
import shutil
import sys
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any, Iterator

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.utils import instantiate
from omegaconf import DictConfig

from organics_bench.errors import UserError

CHOICE_GROUPS = ("model", "task", "trainer", "optimizer", "scheduler", "logger", "paths", "debug", "diagnostics")
POSITIVE_KEYS = ("model.hidden_size", "optimizer.lr", "trainer.batch_size", "trainer.eval_batch_size",
                 "trainer.epochs")


@contextmanager
def exit_on_user_error() -> Iterator[None]:
    """Print a `UserError` as its one line and exit 2 (also from Hydra callbacks, which swallow exceptions)."""
    try:
        yield
    except UserError as err:
        print(err, file=sys.stderr)
        sys.exit(2)


def available_choices(group: str) -> list[str]:
    """Config names in a group, e.g. available_choices("model") -> ["lstm", "organics", ...]."""
    folder = resources.files("organics_bench.conf").joinpath(group)
    return sorted(entry.name[:-5] for entry in folder.iterdir() if entry.name.endswith(".yaml"))


def check_choices(argv: list[str]) -> None:
    """One-line error for an unknown `group=choice` on the command line, before Hydra composes anything."""
    for arg in argv:
        group, sep, value = arg.partition("=")
        if not sep or group not in CHOICE_GROUPS or "," in value or value == "null":
            continue
        choices = available_choices(group)
        if value not in choices:
            raise UserError(f"unknown {group} {value!r}; valid choices: {', '.join(choices)}")


def validate(cfg: DictConfig) -> None:
    """Reject values that cannot make sense before any work starts."""
    for key in POSITIVE_KEYS:
        node, _, leaf = key.rpartition(".")
        if node not in cfg or leaf not in cfg[node]:
            continue
        value = cfg[node][leaf]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise UserError(f"{key} must be a positive number, got {value!r}")
    for key in ("trainer.limit_train_batches", "trainer.limit_eval_batches"):
        value = cfg.trainer.get(key.split(".")[1])
        if value is not None and (not isinstance(value, int) or value <= 0):
            raise UserError(f"{key} must be a positive integer or null, got {value!r}")


class PreflightChecks(Callback):
    """Reject bad values and an unusable output directory in one clear line, before Hydra creates any file."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        HydraConfig.instance().set_config(config)  # lets ${hydra:runtime.cwd} resolve in hydra.run.dir
        with exit_on_user_error():
            validate(config)
            _check_writable(Path(config.hydra.run.dir))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        HydraConfig.instance().set_config(config)  # lets ${hydra:runtime.cwd} resolve before the first job
        with exit_on_user_error():
            _check_writable(Path(config.hydra.sweep.dir))


def _check_writable(directory: Path) -> None:
    probe = directory
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise UserError(f"cannot create the output dir {directory}: {probe} is a file; choose another "
                        "hydra.run.dir / paths.output_dir")
    if not os.access(probe, os.W_OK):
        raise UserError(f"cannot write the output dir {directory}: {probe} is not writable; choose another "
                        "hydra.run.dir / paths.output_dir")


def run_theory(cfg: DictConfig) -> dict:
    """A theory experiment: its module writes <name>.json and <name>.png, copied to results/theory/<name>/ with a
    provenance.json (command, seed, git revision, hardware)."""
    from organics_bench.training.records import environment, git_revision
    from organics_bench.training.sinks import write_json_atomic

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    summary = instantiate(cfg.theory, out_dir=run_dir, smoke=cfg.smoke, seed=cfg.seed)
    write_json_atomic({"command": " ".join(["organics-bench", *hydra_cfg.overrides.task]), "seed": cfg.seed,
                       "git_revision": git_revision(Path(__file__).resolve().parent), "env": environment("cpu")},
                      run_dir / "provenance.json")
    if cfg.paths.results_dir:
        target = Path(cfg.paths.results_dir) / "theory" / cfg.experiment_name.removeprefix("theory_")
        target.mkdir(parents=True, exist_ok=True)
        for produced in sorted(run_dir.glob("*.json")) + sorted(run_dir.glob("*.png")):
            shutil.copyfile(produced, target / produced.name)
        print(f"results: {target}")
    return summary


@hydra.main(version_base="1.3", config_path="pkg://organics_bench.conf", config_name="config")
def _hydra_entry(cfg: DictConfig) -> float | None:
    with exit_on_user_error():
        validate(cfg)
        if cfg.job == "theory":
            run_theory(cfg)
            return None
        from organics_bench.training.run import train

        try:
            return train(cfg)["metrics"].get("best_val/acc")
        except KeyboardInterrupt:
            run_dir = HydraConfig.get().runtime.output_dir
            print(f"interrupted: every file so far is kept in {run_dir}; continue with resume={run_dir}",
                  file=sys.stderr)
            sys.exit(130)


def main() -> None:
    """Console-script entry point."""
    with exit_on_user_error():
        check_choices(sys.argv[1:])
    _hydra_entry()


if __name__ == "__main__":
    main()
