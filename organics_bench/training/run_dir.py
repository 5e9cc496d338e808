"""One live run per run directory, one config per run directory, and no trace of a run that never started.

A run holds an exclusive lock on `<run dir>/run.lock` for its whole life: a second run pointed at the same dir
is refused instead of interleaving its rows with the first one's. A dir that already holds a run of another
config (or seed) is refused; the same config re-run into its own dir (a requeue, or a sweep run again into its
fixed sweep dir) continues from its last.pt, or does nothing if that run has finished.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from pathlib import Path

import yaml

from organics_bench.errors import UserError
from organics_bench.training.records import FINISHED, config_hash

LOCK_NAME = "run.lock"
_held: dict[Path, int] = {}


def claim(run_dir: Path, resolved: dict, check_config: bool = True) -> None:
    """Lock `run_dir` for this process and (unless resuming, which has rules of its own) check it holds no run of
    another config; idempotent per process."""
    run_dir = run_dir.resolve()
    if run_dir in _held:
        return
    if check_config:
        _check_same_config(run_dir, resolved)
    run_dir.mkdir(parents=True, exist_ok=True)
    handle = os.open(run_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(handle)
        raise UserError(
            f"the run dir {run_dir} is in use by another live run; choose another hydra.run.dir "
            "or wait for that run to end"
        ) from None
    _held[run_dir] = handle


def release(run_dir: Path) -> None:
    """Unlock `run_dir` when its job ends (a multirun's jobs share one process: each lets go of its own dir)."""
    handle = _held.pop(run_dir.resolve(), None)
    if handle is not None:
        os.close(handle)


def _check_same_config(run_dir: Path, resolved: dict) -> None:
    stored_path = run_dir / "config.yaml"
    if not stored_path.is_file():
        return
    stored = yaml.safe_load(stored_path.read_text()) or {}
    same = config_hash(stored) == config_hash(resolved) and stored.get("seed") == resolved.get("seed")
    if not same:
        raise UserError(
            f"the run dir {run_dir} holds a run of another config or seed (config hash "
            f"{config_hash(stored)}, seed {stored.get('seed')}; this one: {config_hash(resolved)}, seed "
            f"{resolved.get('seed')}); choose another hydra.run.dir (hydra.sweep.dir for a sweep), or resume={run_dir} "
            "to continue it"
        )


def is_live(run_dir: Path) -> bool:
    """Whether a live process holds `run_dir`'s lock, i.e. a run is in progress there (a killed one's lock is gone)."""
    path = run_dir / LOCK_NAME
    if not path.is_file():
        return False
    handle = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(handle)  # and with it the lock this took
    return False


def previous_attempt(run_dir: Path) -> Path | None:
    """The last.pt an earlier attempt of this same run left in `run_dir` (a requeued or re-run job), if any."""
    path = run_dir / "checkpoints" / "last.pt"
    return path if path.is_file() else None


def finished_record(run_dir: Path) -> dict | None:
    """The record (metrics.json) of a run that has already finished in `run_dir` (status ok or diverged), if any."""
    path = run_dir / "metrics.json"
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    return record if record.get("status") in FINISHED else None


def remove_if_unstarted(run_dir: Path, log_name: str, stop_at: Path) -> bool:
    """Delete `run_dir` if it holds only what Hydra and the lock put there before the run began (its .hydra/, its
    log, run.lock), then its empty parents up to `stop_at`; returns whether it was deleted."""
    run_dir = run_dir.resolve()
    if not run_dir.is_dir() or not {p.name for p in run_dir.iterdir()} <= {".hydra", log_name, LOCK_NAME}:
        return False
    release(run_dir)
    shutil.rmtree(run_dir)
    stop_at = stop_at.resolve()
    parent = run_dir.parent
    while parent != stop_at and stop_at in parent.parents and not any(parent.iterdir()):
        parent.rmdir()
        parent = parent.parent
    if parent == stop_at and stop_at.is_dir() and not any(stop_at.iterdir()):
        stop_at.rmdir()
    return True
