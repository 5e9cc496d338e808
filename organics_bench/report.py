"""`organics-bench-report`: a results table and training-curve figure from finished runs' records.

    organics-bench-report results/runs/mini_smnist_rows --table results/tables/mini_smnist_rows.md \
        --figure results/figures/mini_smnist_rows.png
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from functools import cache
from pathlib import Path

from hydra import compose, initialize_config_module
from hydra.core.hydra_config import HydraConfig

from organics_bench.cli import available_choices
from organics_bench.io import write_text_atomic
from organics_bench.plots import plot_training_curves
from organics_bench.training.records import config_hash, job_config

COLUMNS = (
    "model",
    "task",
    "seed",
    "lr",
    "status",
    "test acc",
    "best val acc",
    "epochs",
    "params",
    "time/epoch (s)",
    "max grad norm",
    "spectral radius",
)


def load_records(folder: Path) -> list[dict]:
    """Every results record (seed<k>.json) under `folder`, with its per-epoch history beside it."""
    records = []
    for path in sorted(folder.rglob("*.json")):
        record = json.loads(path.read_text())
        if "metrics" not in record or "model" not in record:
            continue
        history_path = path.with_name(path.stem + ".history.csv")
        record["history"] = list(csv.DictReader(history_path.open())) if history_path.exists() else []
        records.append(record)
    return records


def diverged(record: dict) -> bool:
    """Whether a published run diverged: its loss, or the L2 norm of its gradient, stopped being finite.

    A gradient norm past float32's range means entries whose squares overflow: Adam's second moment turns inf there
    and those weights never move again, so the run is over even where its loss stays finite. The trainer ends a run
    at that step (`status: diverged`); records written before it did (git 8ffd68c and earlier) say `ok` with
    `grad_norm.nonfinite_steps` > 0, and count as diverged too."""
    return record["status"] == "diverged" or bool((record.get("grad_norm") or {}).get("nonfinite_steps"))


def outcome(record: dict) -> str:
    """The record's status, with a pre-fix gradient overflow called what it is."""
    return "diverged (gradient overflow)" if record["status"] == "ok" and diverged(record) else record["status"]


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def markdown_table(records: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in records:
        m = r["metrics"]
        cells = (
            r["model"],
            r["task"],
            str(r["seed"]),
            _fmt(learning_rate(r), "g"),
            outcome(r),
            _fmt(m.get("test/acc"), ".4f"),
            _fmt(m.get("best_val/acc"), ".4f"),
            str(r["epochs_completed"]),
            f"{r['n_params']:,}",
            _fmt(r["time"]["per_epoch_s"], ".2f"),
            _fmt(r["grad_norm"]["max"], ".3g"),
            _fmt(r["spectral_radius"]["final"], ".3f"),
        )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def learning_rate(record: dict) -> float | None:
    """The optimizer's learning rate the run was configured with (None where the record has no config)."""
    return (record.get("config") or {}).get("optimizer", {}).get("lr")


def curve_label(record: dict, several_rates: bool) -> str:
    """A run's legend entry: model and seed, and its learning rate where the folder holds several."""
    rate = f", lr {learning_rate(record):g}" if several_rates else ""
    return f"{record['model']} (seed {record['seed']}{rate})"


def run_group(record: dict) -> tuple[str, str, str, str]:
    """(experiment, task, model, config hash): runs are averaged only within one group, never by model alone."""
    digest = record.get("config_hash") or (config_hash(record["config"]) if "config" in record else "-")
    return record.get("experiment", "-"), record["task"], record["model"], digest


def outcome_summary(records: list[dict]) -> str:
    """Per group of runs that share experiment, task, model and config hash: how many runs, how many diverged (a
    result, since nothing is clipped), mean test accuracy."""
    lines = [
        "| experiment | task | model | config | runs | diverged | mean test acc (finished runs) |",
        "|---|---|---|---|---|---|---|",
    ]
    groups: dict[tuple[str, str, str, str], list[dict]] = {}
    for r in records:
        groups.setdefault(run_group(r), []).append(r)
    for key in sorted(groups):
        runs = groups[key]
        n_diverged = sum(map(diverged, runs))
        accs = [
            r["metrics"]["test/acc"]
            for r in runs
            if r["status"] == "ok" and not diverged(r) and r["metrics"].get("test/acc") is not None
        ]
        mean = f"{sum(accs) / len(accs):.4f}" if accs else "-"
        lines.append(f"| {' | '.join(key)} | {len(runs)} | {n_diverged} ({n_diverged / len(runs):.0%}) | {mean} |")
    return "\n".join(lines)


def resumed_without_experiment(command: str) -> bool:
    """Whether `command` continues a checkpoint (`resume=`) without naming its experiment (`experiment=`): once the
    run is published its snapshot is retired, and the command alone no longer repeats the run."""
    options = [token.split("=", 1)[0] for token in command.split()]
    return "resume" in options and "experiment" not in options


def experiment_config(choice: str) -> dict:
    """The resolved job config of `experiment=<choice>` (call inside `initialize_config_module`)."""
    cfg = compose("config", overrides=[f"experiment={choice}"], return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    return job_config(cfg)


@cache
def experiment_hashes(name: str) -> dict[str, str]:
    """The config hash of each experiment choice whose composed `experiment_name` is `name` (composed once per name)."""
    candidates = [c for c in available_choices("experiment") if name.endswith(c.rsplit("/", 1)[-1])]
    with initialize_config_module("organics_bench.conf", version_base="1.3"):
        jobs = {choice: experiment_config(choice) for choice in candidates}
    return {choice: config_hash(job) for choice, job in jobs.items() if job["experiment_name"] == name}


def starting_command(record: dict) -> str | None:
    """The command that trains the record's config from scratch, `organics-bench experiment=<choice> seed=<k>`: the
    experiment config whose composed name and config hash are the record's; None when no experiment config is."""
    digest = config_hash(record["config"])
    hashes = experiment_hashes(record["experiment"]) if record.get("experiment") else {}
    choice = next((choice for choice, h in hashes.items() if h == digest), None)
    return f"organics-bench experiment={choice} seed={record['seed']}" if choice else None


def provenance(records: list[dict]) -> str:
    """The command, seed, git revision and hardware behind each row; for a run whose last process resumed a checkpoint
    without naming its experiment also the command that trains its config from scratch (that `resume=` names a
    snapshot that is gone once the run is published)."""
    lines = []
    for r in records:
        env = r["env"]
        made_by = f"`{r['command']}`"
        if resumed_without_experiment(r["command"]):
            start = starting_command(r)
            made_by = (
                f"`{start}`, resumed last by {made_by}"
                if start
                else f"{made_by} (resumed; no experiment config trains this config from scratch)"
            )
        lines.append(
            f"- {r['model']} seed {r['seed']}: {made_by} (git {r['git_revision']}, {env['hardware']}, "
            f"torch {env['torch']})"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Summarise finished runs (results/runs/...) as a table and figure.")
    parser.add_argument("folder", type=Path, help="folder holding seed<k>.json records, e.g. results/runs/<exp>")
    parser.add_argument("--table", type=Path, help="also write the markdown table (with provenance) here")
    parser.add_argument("--figure", type=Path, help="write training curves of every run here (PNG)")
    args = parser.parse_args(argv)
    records = load_records(args.folder) if args.folder.is_dir() else []
    if not records:
        print(
            f"error: no results records (seed<k>.json) under {args.folder}; run organics-bench first", file=sys.stderr
        )
        sys.exit(2)
    table = markdown_table(records) + "\n\n" + outcome_summary(records)
    print(table)
    if args.table:
        write_text_atomic(
            f"# {args.folder.name}\n\n{table}\n\nTest acc is measured at the best-validation epoch.\n\n"
            f"Made by:\n{provenance(records)}\n",
            args.table,
        )
        print(f"table: {args.table}")
    if args.figure:
        several_rates = len({learning_rate(r) for r in records}) > 1
        curves = {curve_label(r, several_rates): r["history"] for r in records if r["history"]}
        plot_training_curves(curves, args.figure, title=f"{args.folder.name}: training curves")
        print(f"figure: {args.figure}")


if __name__ == "__main__":
    main()
