"""`organics-bench-snapshot`: long runs across sessions: started and resumed in the background, watched, and
snapshotted (commit-ready) when unfinished, so that they resume exactly elsewhere.

    organics-bench-snapshot outputs/long/<run dir> [...]   # -> results/in_progress/<experiment>/seed<k>/
    organics-bench-snapshot --all outputs/long             # every unfinished run dir under it (make snapshot)
    organics-bench-snapshot --figures                      # redraw every snapshot's training curves (make tables)
    organics-bench-snapshot --resume                       # continue each in the background (make resume-long)
    organics-bench-snapshot --start paper/table2_lstm64_psmnist [...]   # a new long run, in the background
    organics-bench-snapshot --status                       # each long run: epoch, pace, time left (make long-status)

A snapshot is the part of a run dir that resuming needs (checkpoints/last.pt, steps.csv, history.csv, the running
metrics.json, the diagnostics' spectra/ and gradient_flow/), plus progress.json: the epoch reached and the test
accuracy of the best-validation weights so far (the run's best.pt evaluated on the test split, as `mode=evaluate`
does). It is written to a temporary folder and renamed over the previous one, so a crash leaves the old snapshot.
Resume it with `organics-bench resume=results/in_progress/<experiment>/seed<k> hydra.run.dir=<new run dir>`.
A run dir qualifies while its status is running or interrupted, and a snapshot is never replaced by one from an
earlier epoch (an old run dir left beside the one that resumed it).
Nothing here is a finished result: the tables show a snapshot as "in progress", never as a seed
(`paper_table`), and a run is published to results/runs/ only when it finishes, which deletes its snapshot
(`records.retire_snapshot`).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from organics_bench.cli import available_choices
from organics_bench.io import write_json_atomic
from organics_bench.plots import plot_training_curves
from organics_bench.training.records import snapshot_dir, snapshot_figure
from organics_bench.training.run_dir import is_live, previous_attempt
from organics_bench.training.sinks import read_csv_rows

RUN_FILES = ("steps.csv", "history.csv", "metrics.json", "config.yaml")
RUN_FOLDERS = ("spectra", "gradient_flow")
PROGRESS = "progress.json"
UNFINISHED = ("running", "interrupted")  # a live run, or one stopped by a signal (SIGTERM, Ctrl-C) between epochs


def take_snapshot(run_dir: Path, results_dir: Path, evaluate: bool = True) -> Path:
    """Copy what resuming `run_dir` needs into its snapshot dir (replacing the last one), with progress.json."""
    record = json.loads((run_dir / "metrics.json").read_text())
    if record["status"] not in UNFINISHED:
        _fail(f"{run_dir} has finished (status {record['status']}): publish it, do not snapshot it")
    target = snapshot_dir(results_dir, record["experiment"], record["seed"])
    if (target / PROGRESS).is_file():
        committed = json.loads((target / PROGRESS).read_text())["epochs_completed"]
        if committed > record["epochs_completed"]:
            _fail(
                f"{target} is at epoch {committed}, further than {run_dir} (epoch {record['epochs_completed']}): "
                "a snapshot never goes back; nothing replaced"
            )
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        (staging / "checkpoints").mkdir()
        shutil.copy2(run_dir / "checkpoints" / "last.pt", staging / "checkpoints" / "last.pt")
        for name in RUN_FILES:
            shutil.copy2(run_dir / name, staging / name)
        for name in RUN_FOLDERS:
            if (run_dir / name).is_dir():
                shutil.copytree(run_dir / name, staging / name)
        best = _best_test_accuracy(run_dir) if evaluate else None
        progress = {
            "experiment": record["experiment"],
            "model": record["model"],
            "task": record["task"],
            "seed": record["seed"],
            "config_hash": record["config_hash"],
            "epochs_completed": record["epochs_completed"],
            "epochs_planned": record["epochs_planned"],
            "best_val_acc": record["metrics"].get("best_val/acc"),
            "best_epoch": record["metrics"].get("best_epoch"),
            "best_val_test_acc": best,
            "segments": record.get("segments", []),
            "git_revision": record["git_revision"],
            "hardware": record["env"]["hardware"],
            "resume": f"organics-bench resume={target} hydra.run.dir=<new run dir>",
        }
        write_json_atomic(progress, staging / PROGRESS)
        old = target.with_name(f".{target.name}.old")
        if target.exists():
            os.replace(target, old)
        os.replace(staging, target)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    draw_figure(target, results_dir)
    return target


def unfinished_run_dirs(parent: Path) -> list[Path]:
    """The run dirs directly under `parent` whose status is unfinished (running or interrupted), by name."""
    found = []
    for metrics in sorted(parent.glob("*/metrics.json")):
        if json.loads(metrics.read_text()).get("status") in UNFINISHED:
            found.append(metrics.parent)
    return found


def _has_checkpoint(run_dir: Path) -> bool:
    """Whether `run_dir` holds what a snapshot copies: its record and the last.pt of a finished epoch."""
    return (run_dir / "metrics.json").is_file() and previous_attempt(run_dir) is not None


def _best_test_accuracy(run_dir: Path) -> float | None:
    """The test accuracy of the run's best-validation weights (checkpoints/best.pt), by `mode=evaluate`."""
    with tempfile.TemporaryDirectory() as out:
        command = [
            sys.executable,
            "-m",
            "organics_bench",
            "mode=evaluate",
            f"checkpoint={run_dir / 'checkpoints' / 'best.pt'}",
            "trainer.num_threads=1",
            "trainer.progress_bar=false",
            "logger=none",
            f"hydra.run.dir={out}",
        ]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            _fail(f"evaluating {run_dir}'s best.pt failed: {result.stderr.strip()[-300:]}")
        return json.loads((Path(out) / "evaluation.json").read_text())["metrics"].get("test/acc")


def read_progress(results_dir: Path, experiment: str) -> list[dict]:
    """The progress.json of every snapshot of `experiment`, by seed."""
    folder = results_dir / "in_progress" / experiment
    return [json.loads(p.read_text()) for p in sorted(folder.glob(f"seed*/{PROGRESS}"))]


def draw_figure(snapshot: Path, results_dir: Path) -> Path:
    """The snapshot's training curves, as results/figures/<experiment>.seed<k>.in_progress.png."""
    progress = json.loads((snapshot / PROGRESS).read_text())
    with (snapshot / "history.csv").open(newline="") as handle:
        history = list(csv.DictReader(handle))
    label = f"{progress['model']} seed {progress['seed']}"
    title = f"{progress['experiment']}: in progress, epoch {progress['epochs_completed']}/{progress['epochs_planned']}"
    figure = snapshot_figure(results_dir, progress["experiment"], progress["seed"])
    return plot_training_curves({label: history}, figure, title=title)


def resume_all(results_dir: Path, long_dir: Path, threads: int = 1, only: list[str] | None = None) -> list[Path]:
    """Start every snapshot's run (or only those named in `only`: results/in_progress/<name>, a folder prefix such as
    `paper/` ignored; a name without a snapshot is refused before anything starts) again in the background,
    detached: each continues into `long_dir`/<experiment>_seed<k>/ (log and pid file beside it) with `threads` torch
    threads, publishing to `results_dir` when it finishes (which removes its snapshot). Where its run dir is already
    there, a live or a finished run is left alone (said so); a stopped one (killed with its machine, or interrupted)
    is snapshotted first if it got further than the snapshot, then moved to `long_dir`_ended/. Returns the run dirs
    started."""
    snapshots = [progress.parent for progress in sorted((results_dir / "in_progress").glob(f"*/seed*/{PROGRESS}"))]
    if only:
        wanted, have = {Path(name).name for name in only}, {snapshot.parent.name for snapshot in snapshots}
        if unknown := sorted(wanted - have):
            there = ", ".join(sorted(have)) or "none"
            _fail(f"no snapshot of {', '.join(unknown)} in {results_dir / 'in_progress'} (there: {there})")
        snapshots = [snapshot for snapshot in snapshots if snapshot.parent.name in wanted]
    started = []
    for snapshot in snapshots:
        run_dir = long_dir / f"{snapshot.parent.name}_{snapshot.name}"
        if run_dir.exists() and not _clear_stopped_run(run_dir, snapshot, results_dir):
            continue
        pid = _launch([f"resume={snapshot.resolve()}"], run_dir, results_dir, threads)
        print(f"resumed {snapshot} -> {run_dir} (pid {pid}, log {_log(run_dir)})")
        started.append(run_dir)
    return started


def _clear_stopped_run(run_dir: Path, snapshot: Path, results_dir: Path) -> bool:
    """Make way for resuming `snapshot` into `run_dir`: True once a stopped run's dir is moved aside (after taking
    the snapshot from it, if it got further), False (said why) for a live or a finished run."""
    if is_live(run_dir):
        print(f"skipped {snapshot}: {run_dir} is a live run")
        return False
    metrics = run_dir / "metrics.json"
    record = json.loads(metrics.read_text()) if metrics.is_file() else None
    if record and record["status"] not in UNFINISHED:
        print(f"skipped {snapshot}: {run_dir} has finished (status {record['status']}); move it aside to rerun")
        return False
    committed = json.loads((snapshot / PROGRESS).read_text())["epochs_completed"]
    if record and record["epochs_completed"] > committed and previous_attempt(run_dir):
        take_snapshot(run_dir, results_dir)
        print(
            f"snapshot {snapshot} taken from the stopped {run_dir}: epoch {record['epochs_completed']}, was {committed}"
        )
    aside = (
        run_dir.parent.with_name(run_dir.parent.name + "_ended") / f"{run_dir.name}.{time.strftime('%Y%m%d-%H%M%S')}"
    )
    aside.parent.mkdir(parents=True, exist_ok=True)
    os.replace(run_dir, aside)
    for beside in (_log(run_dir), _pid_file(run_dir)):
        if beside.exists():
            os.replace(beside, aside.with_name(aside.name + beside.suffix))
    print(f"moved the stopped {run_dir} to {aside}")
    return True


def start_new(experiments: list[str], seed: int, results_dir: Path, long_dir: Path, threads: int = 1) -> list[Path]:
    """Start each experiment's run of `seed` afresh in the background, as `resume_all` continues snapshots: into
    `long_dir`/<experiment's file name>_seed<k>/, publishing when it finishes; `make snapshot` and `make resume-long`
    then carry it across sessions. An unknown experiment is refused before anything starts; a taken run dir is
    skipped and said so. Returns the run dirs started."""
    known = available_choices("experiment")
    if unknown := [e for e in experiments if e not in known]:
        _fail(f"unknown experiment {', '.join(unknown)}: the choices are conf/experiment/<name>.yaml")
    started = []
    for experiment in experiments:
        run_dir = long_dir / f"{Path(experiment).name}_seed{seed}"
        if run_dir.exists():
            print(f"skipped {experiment}: {run_dir} exists (a live run, or an old one to move aside)")
            continue
        pid = _launch([f"experiment={experiment}", f"seed={seed}"], run_dir, results_dir, threads)
        print(f"started {experiment} seed {seed} -> {run_dir} (pid {pid}, log {_log(run_dir)})")
        started.append(run_dir)
    return started


def _launch(overrides: list[str], run_dir: Path, results_dir: Path, threads: int) -> int:
    """`organics-bench OVERRIDES` into `run_dir`, detached (it outlives this command and its shell), one progress
    line per epoch in its log beside the run dir, its pid in a file there too; returns the pid."""
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    command = [
        str(Path(sys.executable).parent / "organics-bench"),
        *overrides,
        f"trainer.num_threads={threads}",
        "trainer.progress_bar=false",
        "publish=true",
        f"paths.results_dir={results_dir.resolve()}",
        f"hydra.run.dir={run_dir.resolve()}",
    ]
    with _log(run_dir).open("w") as out:
        process = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=os.environ | {"OMP_NUM_THREADS": str(threads)},
        )
    _pid_file(run_dir).write_text(f"{process.pid}\n")
    return process.pid


def _log(run_dir: Path) -> Path:
    return run_dir.with_name(run_dir.name + ".log")


def _pid_file(run_dir: Path) -> Path:
    return run_dir.with_name(run_dir.name + ".pid")


def long_run_status(long_dir: Path, pace_epochs: int = 5) -> str:
    """A table of the run dirs under `long_dir`: status, epoch reached, the median time of its last `pace_epochs`
    epochs, the time left at that pace (while it is live), best validation accuracy so far, and whether a process
    holds its lock: a run whose status says running without one was killed (its machine's end of day)."""
    lines = [
        "| run | status | epoch | s / epoch | time left | best val acc | process |",
        "|---|---|---|---|---|---|---|",
    ]
    for run_dir in sorted(d for d in long_dir.iterdir() if d.is_dir()):
        live = is_live(run_dir)
        if not (run_dir / "metrics.json").is_file():
            lines.append(f"| {run_dir.name} | starting (no epoch yet) | — | — | — | — | {_process(run_dir, live)} |")
            continue
        record = json.loads((run_dir / "metrics.json").read_text())
        history = read_csv_rows(run_dir / "history.csv", record["global_step"])
        times = [float(row["epoch_time_s"]) for row in history][-pace_epochs:]
        done, planned = record["epochs_completed"], record["epochs_planned"]
        pace = statistics.median(times) if times else None  # an epoch paused by SIGSTOP does not set the pace
        status = record["status"]
        if status == "running" and not live:
            status = "stopped (its process ended: make resume-long continues it)"
        left = _hours((planned - done) * pace) if pace is not None and live else "—"
        best = record["metrics"].get("best_val/acc")
        cells = [
            run_dir.name,
            status,
            f"{done}/{planned}",
            "—" if pace is None else f"{pace:.0f}",
            left,
            "—" if best is None else f"{best:.4f}",
            _process(run_dir, live),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _hours(seconds: float) -> str:
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"


def _process(run_dir: Path, live: bool) -> str:
    """ "live" or "ended" (whether a process holds the run dir's lock), with the pid that `_launch` recorded."""
    pid = _pid_file(run_dir).read_text().strip() if _pid_file(run_dir).is_file() else None
    return ("live" if live else "ended") + (f" (pid {pid})" if pid else "")


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    parser = argparse.ArgumentParser(prog="organics-bench-snapshot", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dirs", nargs="*", type=Path, help="run dirs of unfinished runs")
    parser.add_argument("--results-dir", type=Path, default=Path("results"), help="holds in_progress/")
    parser.add_argument(
        "--all", type=Path, metavar="DIR", help="also snapshot every unfinished run dir directly under DIR"
    )
    parser.add_argument("--no-evaluate", action="store_true", help="skip the test accuracy of the best weights")
    parser.add_argument("--figures", action="store_true", help="redraw the training curves of every snapshot")
    parser.add_argument(
        "--resume",
        nargs="*",
        metavar="NAME",
        help="start every snapshot's run (or those of results/in_progress/NAME) in the background, one thread each",
    )
    parser.add_argument(
        "--start", nargs="+", metavar="EXPERIMENT", help="start these experiments' runs afresh in the background"
    )
    parser.add_argument("--seed", type=int, default=0, help="the seed of the runs --start starts (default 0)")
    parser.add_argument("--status", action="store_true", help="a table of the long runs: epoch, pace, time left")
    parser.add_argument(
        "--long-dir", type=Path, default=Path("outputs/long"), help="where --resume and --start put run dirs"
    )
    args = parser.parse_args(argv)
    if args.all is not None and not args.all.is_dir():
        _fail(f"--all {args.all}: no such folder")
    found = unfinished_run_dirs(args.all) if args.all is not None else []
    if args.all is not None and not found:
        print(f"no unfinished run dir under {args.all}")
    for run_dir in args.run_dirs:
        if not _has_checkpoint(run_dir):
            _fail(f"{run_dir} is not a run dir with a checkpoint (metrics.json, checkpoints/last.pt)")
    ready = []
    for run_dir in found:
        if _has_checkpoint(run_dir):
            ready.append(run_dir)
        else:
            print(f"skipped {run_dir}: stopped before its first epoch ended, nothing to snapshot")
    for run_dir in [*args.run_dirs, *ready]:
        print(f"snapshot: {take_snapshot(run_dir, args.results_dir, evaluate=not args.no_evaluate)}")
    if args.figures:
        for progress in sorted((args.results_dir / "in_progress").glob(f"*/seed*/{PROGRESS}")):
            print(f"figure: {draw_figure(progress.parent, args.results_dir)}")
    if args.resume is not None:
        resume_all(args.results_dir, args.long_dir, only=args.resume)
    if args.start:
        start_new(args.start, args.seed, args.results_dir, args.long_dir)
    if args.status:
        print(long_run_status(args.long_dir) if args.long_dir.is_dir() else f"no long runs: {args.long_dir} is empty")
