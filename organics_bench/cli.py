"""The `organics-bench` command: `organics-bench model=organics task=psmnist [overrides]` (Hydra 1.3).

`organics-bench --help` lists the config groups and their choices; `--cfg job` prints the composed config.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from importlib import resources
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig

from organics_bench import arguments
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


# Each finished job's record, with its run dir, while `python_call` runs (`organics_bench.run`).
_records: ContextVar[list[dict] | None] = ContextVar("organics_bench_records", default=None)


class Terminated(KeyboardInterrupt):
    """SIGTERM (a timeout, SLURM, `docker stop`): stopped like Ctrl-C, every file kept."""


class UserErrorExit(SystemExit):
    """Exit status 2 once a `UserError` has been printed; `error` keeps it for `organics_bench.run` to raise."""

    def __init__(self, error: UserError) -> None:
        super().__init__(2)
        self.error = error


@contextmanager
def exit_on_user_error() -> Iterator[None]:
    """Print a `UserError` as its one line (unless a `python_call` will raise it) and exit 2 (also from Hydra
    callbacks, which swallow exceptions)."""
    try:
        yield
    except UserError as err:
        if _records.get() is None:
            print(err, file=sys.stderr)
        raise UserErrorExit(err) from None


@contextmanager
def python_call() -> Iterator[list[dict]]:
    """The command line run from Python: a `UserError` is left to the caller (`UserErrorExit.error`), not printed,
    and the block yields the records of the jobs that finish (metrics.json of a training run, evaluation.json of an
    evaluation, a theory experiment's summary), each with `run_dir`, the folder the job wrote."""
    records: list[dict] = []
    token = _records.set(records)
    try:
        yield records
    finally:
        _records.reset(token)


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
    config_dirs = arguments.config_dirs(argv)
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
            _check_writable(Path(config.hydra.run.dir), "hydra.run.dir / paths.output_dir")
            if config.get("publish") and config.paths.results_dir:
                _check_writable(Path(config.paths.results_dir), "paths.results_dir")
            if config.mode == "train":
                run_dir.claim(Path(config.hydra.run.dir), job_config(config), check_config=not config.resume)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        HydraConfig.instance().set_config(config)  # lets ${hydra:runtime.cwd} resolve before the first job
        with exit_on_user_error():
            _check_writable(Path(config.hydra.sweep.dir), "hydra.sweep.dir / paths.output_dir")


def _check_writable(directory: Path, setting: str) -> None:
    """One line naming `setting` where `directory` cannot be made: a file in the way, a folder without write
    permission, or a file system that refuses new folders (tried with a probe folder, made and removed at once)."""
    probe = directory
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise UserError(f"cannot create the output dir {directory}: {probe} is a file; choose another {setting}")
    if not os.access(probe, os.W_OK):
        raise UserError(f"cannot write the output dir {directory}: {probe} is not writable; choose another {setting}")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".organics-bench-probe-", dir=probe))
    except OSError as err:
        raise UserError(
            f"cannot create the output dir {directory}: {probe} refuses new folders ({err.strerror or err}); "
            f"choose another {setting}"
        ) from None


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


@contextmanager
def sigterm_stops_like_ctrl_c() -> Iterator[None]:
    """SIGTERM raises `Terminated` while the block runs (in the main thread: only it can handle signals)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@hydra.main(version_base="1.3", config_path="pkg://organics_bench.conf", config_name="config")
def _hydra_entry(cfg: DictConfig) -> float | None:
    hydra_cfg = HydraConfig.get()
    out_dir = Path(hydra_cfg.runtime.output_dir)
    try:
        with (
            sigterm_stops_like_ctrl_c(),
            exit_on_user_error(),
            removed_if_unstarted(out_dir, f"{hydra_cfg.job.name}.log", Path(cfg.paths.output_dir)),
        ):
            if hydra_cfg.mode == RunMode.MULTIRUN:  # a single run was checked by PreflightChecks, before its dir
                validate(cfg, hydra_cfg.runtime.choices.get("model"))
            record = _run_job(cfg, out_dir)
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
    _note_record(record, out_dir)
    return record["metrics"].get("best_val/acc") if cfg.mode == "train" else None


def _note_record(record: dict, out_dir: Path) -> None:
    """Hand a finished job's record to the `python_call` around it, if any (a module-level function: launchers
    pickle the job function, which must not hold the ContextVar itself)."""
    if (records := _records.get()) is not None:
        records.append({**record, "run_dir": str(out_dir)})


def _run_job(cfg: DictConfig, out_dir: Path) -> dict:
    """The job `cfg.mode` names, in `out_dir`; its record."""
    if cfg.mode == "theory":
        return run_theory(cfg)
    if cfg.mode == "evaluate":
        from organics_bench.training.evaluate import evaluate

        return evaluate(cfg)
    run_dir.claim(out_dir, job_config(cfg), check_config=not cfg.resume)
    from organics_bench.training.run import train

    try:
        return train(cfg)
    finally:
        run_dir.release(out_dir)


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point: `organics-bench ARGS`, with ARGS from `argv` or else the process's command line."""
    args = sys.argv[1:] if argv is None else list(argv)
    with exit_on_user_error():
        check_choices(args)
        arguments.check_keys(args)
    arguments.import_from_config_dirs(args)
    if run_dir_override := arguments.stored_run_dir(args):
        args.append(run_dir_override)
    saved_argv, saved_format = sys.argv, warnings.formatwarning
    sys.argv = [saved_argv[0] if saved_argv else "organics-bench", *args]
    warnings.formatwarning = _one_line_warning
    try:
        _hydra_entry()
    finally:
        sys.argv, warnings.formatwarning = saved_argv, saved_format


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    """A warning as the command line prints it: one line, like its `error:` lines, without the source line."""
    return f"warning: {message} ({category.__name__})\n"


if __name__ == "__main__":
    main()
