"""One real training epoch of a paper experiment per thread count: the trainer's own epoch time (training on every
batch of the full MNIST, validation included, diagnostics on), written to results/bench/epoch_<host>.{json,md}.

    python scripts/bench_epoch.py                                   # paper/table2_organics64_psmnist, 1 and 2 threads
    python scripts/bench_epoch.py --experiment paper/table2_lstm64_psmnist --threads 1

Needs the real MNIST (`make data`). Each epoch runs in its own process, one after the other; run it on a quiet
machine (pause other runs): the number is a wall-clock time, not a side-by-side ratio.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from organics_bench.training.records import environment, git_revision

ROOT = Path(__file__).resolve().parents[1]


def epoch_time(experiment: str, threads: int, limit: int | None) -> dict:
    """The trainer's epoch time (s) and batch count of one epoch of `experiment` with `threads` torch threads."""
    with tempfile.TemporaryDirectory() as run_dir:
        command = [
            "organics-bench",
            f"experiment={experiment}",
            "trainer.epochs=1",
            f"trainer.num_threads={threads}",
            f"trainer.limit_train_batches={limit if limit else 'null'}",
            "trainer.progress_bar=false",
            "logger=none",
            f"hydra.run.dir={run_dir}",
        ]
        subprocess.run([sys.executable, "-m", "organics_bench", *command[1:]], check=True, capture_output=True)
        with (Path(run_dir) / "history.csv").open() as handle:
            (row,) = csv.DictReader(handle)
        with (Path(run_dir) / "steps.csv").open() as handle:
            batches = sum(1 for _ in csv.DictReader(handle))
    return {"threads": threads, "epoch_s": float(row["epoch_time_s"]), "batches": batches, "command": " ".join(command)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", default="paper/table2_organics64_psmnist")
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    parser.add_argument("--limit", type=int, help="train batches per epoch (default: all)")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "bench")
    args = parser.parse_args()
    runs = []
    for threads in map(int, args.threads.split(",")):
        runs.append(epoch_time(args.experiment, threads, args.limit))
        print(f"{threads} thread(s): {runs[-1]['epoch_s']:.1f} s for {runs[-1]['batches']} batches", flush=True)
    record = {
        "experiment": args.experiment,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "git_revision": git_revision(ROOT),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "env": environment("cpu"),
        "runs": runs,
    }
    lines = [
        f"# One training epoch: {args.experiment}",
        "",
        f"`{record['command']}`, git {record['git_revision']}, torch {record['env']['torch']}, "
        f"{platform.processor() or platform.machine()} ({record['env']['host']}), {record['date']}. The trainer's "
        "epoch time: every training batch (forward, backward, Adam step), the validation split and the diagnostics.",
        "",
        "| threads | batches | epoch (s) | command |",
        "|---|---|---|---|",
        *(f"| {r['threads']} | {r['batches']} | {r['epoch_s']:.1f} | `{r['command']}` |" for r in runs),
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"epoch_{record['env']['host']}"
    Path(f"{stem}.json").write_text(json.dumps(record, indent=2) + "\n")
    Path(f"{stem}.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {stem}.json and {stem}.md")


if __name__ == "__main__":
    main()
