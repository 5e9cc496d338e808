"""`organics_bench.run`: a benchmark job from Python (a notebook, a script) through the command line's own path:
the same config composition, checks, run dir and records, with bad input raised as `UserError`."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from hydra.errors import CompactHydraException

from organics_bench import cli
from organics_bench.errors import UserError
from organics_bench.training.records import flushes_denormals


def run(overrides: Sequence[str] = (), *, config_dir: str | os.PathLike[str] | None = None) -> dict:
    """Run one job as `organics-bench OVERRIDES --config-dir CONFIG_DIR` would, in this process, and return its
    record: metrics.json's content for training, evaluation.json's for `mode=evaluate`, a theory experiment's
    summary, each with `run_dir`, the folder the job wrote.

    `config_dir` (optional) is a folder of your own config groups (model/, task/, ...); it goes first on the import
    path, so a module beside its configs is found by the `_target_`s they name. Bad input raises `UserError` with
    the command line's message, having written nothing where the command line writes nothing; other errors keep
    their traceback. Ctrl-C stops the job with its files kept and raises KeyboardInterrupt. Torch's thread count
    and subnormal flushing and the logging handlers are as they were afterwards.
    """
    args = list(overrides)
    if flags := [arg for arg in args if arg.startswith("-")]:
        raise UserError(
            f"organics_bench.run takes key=value overrides, not {flags[0]}: one job per call (a sweep is a loop "
            "over calls, or organics-bench -m), a config folder as config_dir=..."
        )
    if config_dir is not None:
        args += ["--config-dir", str(Path(config_dir).expanduser().resolve())]
    with _process_state_kept(), cli.python_call() as records:
        try:
            cli.main(args)
        except cli.UserErrorExit as stop:
            raise stop.error from None
        except CompactHydraException as err:  # what Hydra itself refuses, e.g. an override's syntax
            raise UserError(str(err)) from err
        except SystemExit as stop:  # the command line's exit after Ctrl-C (130) or SIGTERM (143)
            raise KeyboardInterrupt(f"stopped (exit status {stop.code}); the run's files are kept") from None
    return records[-1]


@contextmanager
def _process_state_kept() -> Iterator[None]:
    """Torch's thread count and subnormal flushing and the root logger as they were; HYDRA_FULL_ERROR=1 meanwhile,
    so that Hydra raises an unexpected error instead of printing it and exiting."""
    threads, flush = torch.get_num_threads(), flushes_denormals()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    full_error = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        yield
    finally:
        if full_error is None:
            os.environ.pop("HYDRA_FULL_ERROR")
        else:
            os.environ["HYDRA_FULL_ERROR"] = full_error
        for handler in root.handlers:
            if handler not in handlers:
                handler.close()
        root.handlers[:] = handlers
        root.setLevel(level)
        torch.set_num_threads(threads)
        torch.set_flush_denormal(flush)
