"""The `organics-bench` command: `organics-bench model=organics task=psmnist [overrides]` (Hydra 1.3).

`organics-bench --help` lists the config groups and their choices; `--cfg job` prints the composed config.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig

from organics_bench.config_checks import validate
from organics_bench.errors import UserError
from organics_bench.io import write_json_atomic
from organics_bench.training import run_dir
from organics_bench.training.records import job_config, provenance, publish_theory

CHOICE_GROUPS = (
    "model",
    "task",
    "trainer",
    "optimizer",
    "scheduler",
    "logger",
    "paths",
    "debug",
    "diagnostics",
    "experiment",
    "leaderboard",
)


class Terminated(KeyboardInterrupt):
    """SIGTERM (a timeout, SLURM, `docker stop`): stopped like Ctrl-C, every file kept."""


@contextmanager
def exit_on_user_error() -> Iterator[None]:
    """Print a `UserError` as its one line and exit 2 (also from Hydra callbacks, which swallow exceptions)."""
    try:
        yield
    except UserError as err:
        print(err, file=sys.stderr)
        sys.exit(2)


def available_choices(group: str, config_dirs: Sequence[str] = ()) -> list[str]:
    """Config names in a group, packaged or under a user's `--config-dir`, e.g. ["lstm", "organics", ...]."""
    folders = [resources.files("organics_bench.conf").joinpath(group), *(Path(d) / group for d in config_dirs)]
    return sorted({name for folder in folders if folder.is_dir() for name in _config_names(folder)})


def _config_names(folder: Any, prefix: str = "") -> Iterator[str]:
    for entry in folder.iterdir():
        if entry.is_dir():
            yield from _config_names(entry, f"{prefix}{entry.name}/")
        elif entry.name.endswith(".yaml"):
            yield prefix + entry.name[:-5]


def check_choices(argv: list[str]) -> None:
    """One-line error for an unknown `group=choice` (or one choice of a `group=a,b` sweep) on the command line,
    before Hydra composes anything."""
    config_dirs = [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg in ("--config-dir", "-cd")]
    config_dirs += [arg.split("=", 1)[1] for arg in argv if arg.startswith("--config-dir=")]
    for arg in argv:
        group, sep, value = arg.partition("=")
        if not sep or group not in CHOICE_GROUPS or value == "null" or any(c in value for c in "()[]{}*"):
            continue
        choices = available_choices(group, config_dirs)
        for choice in value.split(","):
            if choice not in choices:
                listed = ", ".join(c for c in choices if "protocol/" not in c)
                raise UserError(f"unknown {group} {choice!r}; valid choices: {listed}")


class PreflightChecks(Callback):
    """Reject bad values, an unusable output directory and a run dir in use, in one clear line, before Hydra
    writes any file of a single run (a multirun job checks its own config when it starts)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        HydraConfig.instance().set_config(config)  # lets ${hydra:...} resolve before the job
        with exit_on_user_error():
            validate(config, config.hydra.runtime.choices.get("model"))
            _check_writable(Path(config.hydra.run.dir))
            if config.get("publish") and config.paths.results_dir:
                _check_writable(Path(config.paths.results_dir))
            if config.mode == "train":
                run_dir.claim(Path(config.hydra.run.dir), job_config(config), check_config=not config.resume)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        HydraConfig.instance().set_config(config)  # lets ${hydra:runtime.cwd} resolve before the first job
        with exit_on_user_error():
            _check_writable(Path(config.hydra.sweep.dir))


def _check_writable(directory: Path) -> None:
    probe = directory
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise UserError(
            f"cannot create the output dir {directory}: {probe} is a file; choose another "
            "hydra.run.dir / paths.output_dir"
        )
    if not os.access(probe, os.W_OK):
        raise UserError(
            f"cannot write the output dir {directory}: {probe} is not writable; choose another "
            "hydra.run.dir / paths.output_dir"
        )


def run_theory(cfg: DictConfig) -> dict:
    """A theory experiment: its module writes <name>.json and <name>.png, copied to results/theory/<name>/ with a
    provenance.json (command, seed, git revision, hardware) when `publish=true`."""
    hydra_cfg = HydraConfig.get()
    out_dir = Path(hydra_cfg.runtime.output_dir)
    summary = instantiate(cfg.theory, out_dir=out_dir, smoke=cfg.smoke, seed=cfg.seed)
    write_json_atomic({**provenance(hydra_cfg.overrides.task, "cpu"), "seed": cfg.seed}, out_dir / "provenance.json")
    if cfg.publish and cfg.paths.results_dir:
        target = publish_theory(out_dir, Path(cfg.paths.results_dir), cfg.experiment_name.removeprefix("theory_"))
        print(f"results: {target}")
    return summary


@contextmanager
def removed_if_unstarted(out_dir: Path, log_name: str, output_root: Path) -> Iterator[None]:
    """A job that stops on bad input (or is stopped) before its run begins leaves no run dir behind."""
    try:
        yield
    except (UserError, KeyboardInterrupt):
        run_dir.remove_if_unstarted(out_dir, log_name, output_root)
        raise


def _terminate(signum: int, frame: Any) -> None:
    raise Terminated()


@hydra.main(version_base="1.3", config_path="pkg://organics_bench.conf", config_name="config")
def _hydra_entry(cfg: DictConfig) -> float | None:
    hydra_cfg = HydraConfig.get()
    out_dir = Path(hydra_cfg.runtime.output_dir)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        with (
            exit_on_user_error(),
            removed_if_unstarted(out_dir, f"{hydra_cfg.job.name}.log", Path(cfg.paths.output_dir)),
        ):
            if hydra_cfg.mode == RunMode.MULTIRUN:  # a single run was checked by PreflightChecks, before its dir
                validate(cfg, hydra_cfg.runtime.choices.get("model"))
            if cfg.mode == "theory":
                run_theory(cfg)
                return None
            if cfg.mode == "evaluate":
                from organics_bench.training.evaluate import evaluate

                evaluate(cfg)
                return None
            run_dir.claim(out_dir, job_config(cfg), check_config=not cfg.resume)
            from organics_bench.training.run import train

            try:
                return train(cfg)["metrics"].get("best_val/acc")
            finally:
                run_dir.release(out_dir)
    except KeyboardInterrupt as stop:
        if run_dir.previous_attempt(out_dir):
            print(
                f"interrupted: every file so far is kept in {out_dir}; continue with the same command "
                f"and hydra.run.dir={out_dir}, or resume={out_dir}",
                file=sys.stderr,
            )
        else:
            print("interrupted before the first epoch ended: nothing to resume", file=sys.stderr)
        sys.exit(143 if isinstance(stop, Terminated) else 130)


def main() -> None:
    """Console-script entry point."""
    with exit_on_user_error():
        check_choices(sys.argv[1:])
    _hydra_entry()


if __name__ == "__main__":
    main()
