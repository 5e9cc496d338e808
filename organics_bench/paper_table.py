"""`organics-bench-tables`: the paper's tables beside ours, from the committed run records.

    organics-bench-tables                # -> results/tables/paper.md and paper.csv (what `make tables` runs)

One line per experiment of `conf/experiment/{paper,cpu}/` that carries a `paper:` block (the paper's number is
config data): the paper's value, ours as mean ± std over seeds, the protocol (full, or what was reduced), epochs,
parameter counts, seconds per epoch, hardware and where the records are. Runs are averaged only when they share
the experiment and the hash of what their resolved config computes (`records.config_hash`), never by model name.
"""

from __future__ import annotations

import argparse
import csv
import io
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

from hydra import initialize_config_module

from organics_bench.cli import available_choices
from organics_bench.in_progress import read_progress
from organics_bench.io import write_text_atomic
from organics_bench.report import diverged, experiment_config, load_records
from organics_bench.training.records import FINISHED, config_hash

FAMILIES = ("paper", "cpu")
COLUMNS = (
    "table",
    "paper row",
    "task",
    "paper",
    "ours",
    "seeds (diverged)",
    "delta",
    "protocol",
    "epochs",
    "params ours / paper",
    "s/epoch",
    "hardware",
    "experiment",
    "records",
    "our model",
)
README_COLUMNS = ("table", "paper row", "task", "paper", "ours", "seeds (diverged)", "delta", "protocol")
README_MARKERS = ("<!-- paper-table -->", "<!-- /paper-table -->")
# The pairs the paper compares (ORGaNICs vs LSTM; learned vs fixed time constants), as experiment-name stems:
# compared wherever both rows exist at the same scale (prefix `table2_` at the paper's protocol, `cpu_table2_` reduced)
COMPARISONS = (("organics64", "lstm64"), ("organics64", "organics_fixed_tau64"))


@dataclass
class Experiment:
    """An experiment config with a paper row: its name, resolved config and config hash."""

    choice: str
    name: str
    config: dict
    hash: str

    @property
    def paper(self) -> dict:
        return self.config["paper"]


def paper_experiments() -> list[Experiment]:
    """Every `experiment=paper/*` and `experiment=cpu/*` choice with a non-null `paper:` block, composed, resolved."""
    found = []
    with initialize_config_module("organics_bench.conf", version_base="1.3"):
        for family in FAMILIES:
            for name in (n for n in available_choices(f"experiment/{family}") if "/" not in n):  # not protocol/*
                job = experiment_config(f"{family}/{name}")
                if job.get("paper"):  # a null paper block (an lr grid, say) is not a table row
                    found.append(Experiment(f"{family}/{name}", job["experiment_name"], job, config_hash(job)))
    return sorted(
        found, key=lambda e: (e.paper["table"], e.paper["protocol"] != "full", e.paper["value"] is None, e.choice)
    )


def _mean_std(values: list[float]) -> str:
    if not values:
        return "-"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2f} ± {std:.2f}"


def table_row(experiment: Experiment, results_dir: Path) -> dict[str, str]:
    """One line of the table: the paper's number and the matching runs' summary (or "not yet run")."""
    paper = experiment.paper
    folder = results_dir / "runs" / experiment.name
    records = load_records(folder) if folder.is_dir() else []
    runs = [r for r in records if config_hash(r["config"]) == experiment.hash]
    finished = [r for r in runs if r["status"] in FINISHED]
    tested = [r for r in finished if r["metrics"].get("test/acc") is not None]
    accs = [100 * r["metrics"]["test/acc"] for r in tested if not diverged(r)]
    n_diverged = sum(map(diverged, finished))
    value = paper.get("value")
    ours = _mean_std(accs) if finished else "not yet run"
    unfinished = [p for p in read_progress(results_dir, experiment.name) if p["config_hash"] == experiment.hash]
    if unfinished:
        progress = "; ".join(_in_progress(p) for p in unfinished)
        ours = progress if not finished else f"{ours}; {progress}"
    if n_diverged and not accs:
        before = [f"{100 * r['metrics']['test/acc']:.2f}" for r in tested]
        ours = f"all diverged (best-val weights before it: {', '.join(before)})" if before else "all diverged"
    if len(records) > len(runs):
        ours += f" ({len(records) - len(runs)} runs of another config not counted)"
    full = paper["protocol"] == "full"
    epochs = sorted({r["epochs_completed"] for r in finished})
    times = [r["time"]["per_epoch_s"] for r in finished if r["time"]["per_epoch_s"] is not None]
    hardware = sorted({f"{r['env']['hardware']}, torch {r['env']['torch']}" for r in finished})
    n_params = sorted({r["n_params"] for r in finished})
    return {
        "table": str(paper["table"]),
        "paper row": paper["row"],
        "task": paper.get("column", experiment.config["task"]["name"]),
        "paper": "-" if value is None else f"{value:.1f}",
        "ours": ours,
        "seeds (diverged)": f"{len(finished)} ({n_diverged})" if finished else "-",
        "delta": f"{statistics.mean(accs) - value:+.2f}" if accs and value is not None and full else "-",
        "protocol": paper["protocol"],
        "epochs": "/".join(map(str, epochs)) or str(experiment.config["trainer"]["epochs"]),
        "params ours / paper": f"{'/'.join(f'{n:,}' for n in n_params) or '-'} / {paper.get('params') or '-'}",
        "s/epoch": f"{statistics.median(times):.1f}" if times else "-",
        "hardware": "; ".join(hardware) or "-",
        "experiment": f"`experiment={experiment.choice}`",
        "records": f"`{folder.relative_to(results_dir.parent)}/`" if finished else "-",
        "our model": paper.get("note") or "-",
    }


def comparisons(experiments: list[Experiment], results_dir: Path) -> list[dict[str, str]]:
    """Each of `COMPARISONS` at each scale and task where both rows have finished seeds: the difference of the
    means and whether it exceeds the spread over seeds (the larger std; unknown with one seed per row)."""
    by_name = {e.name: e for e in experiments}
    rows = []
    for prefix in ("table2_", "cpu_table2_"):
        for task in ("smnist", "psmnist"):
            for first, second in COMPARISONS:
                pair = [by_name.get(f"{prefix}{stem}_{task}") for stem in (first, second)]
                if None in pair:
                    continue
                accs = [finished_accuracies(e, results_dir) for e in pair]
                if not all(accs):
                    continue
                diff = statistics.mean(accs[0]) - statistics.mean(accs[1])
                spreads = [statistics.stdev(a) for a in accs if len(a) > 1]
                if len(spreads) < 2:
                    verdict = "unknown: one seed in a row"
                else:
                    verdict = "yes" if abs(diff) > max(spreads) else "no"
                rows.append(
                    {
                        "scale": pair[0].paper["protocol"],
                        "task": pair[0].paper.get("column", task),
                        "rows": f"{pair[0].paper['row']} vs {pair[1].paper['row']}",
                        "means": f"{_mean_std(accs[0])} vs {_mean_std(accs[1])}",
                        "seeds": f"{len(accs[0])} vs {len(accs[1])}",
                        "difference": f"{diff:+.2f}",
                        "exceeds the spread over seeds": verdict,
                    }
                )
    return rows


def finished_accuracies(experiment: Experiment, results_dir: Path) -> list[float]:
    """Test accuracies (%) of the experiment's finished, undiverged seeds of its config."""
    folder = results_dir / "runs" / experiment.name
    records = load_records(folder) if folder.is_dir() else []
    return [
        100 * r["metrics"]["test/acc"]
        for r in records
        if config_hash(r["config"]) == experiment.hash
        and r["status"] == "ok"
        and not diverged(r)
        and r["metrics"].get("test/acc") is not None
    ]


def _in_progress(progress: dict) -> str:
    """A snapshot's cell text: never a finished number."""
    test = progress.get("best_val_test_acc")
    so_far = f", best-val test so far {100 * test:.2f} (epoch {progress['best_epoch']})" if test is not None else ""
    seed = f"seed {progress['seed']} " if progress["seed"] else ""
    return f"in progress: {seed}epoch {progress['epochs_completed']}/{progress['epochs_planned']}{so_far}"


def grid(rows: list[dict[str, str]], columns: tuple[str, ...]) -> list[str]:
    """Markdown table lines of `rows` restricted to `columns`."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return lines + ["| " + " | ".join(row[c] for c in columns) + " |" for row in rows]


def replace_readme_block(readme: Path, rows: list[dict[str, str]]) -> None:
    """Rewrite the compact table between `README_MARKERS` in `readme` (the README's Results section)."""
    text = readme.read_text()
    start, end = README_MARKERS
    if start not in text or end not in text:
        raise SystemExit(f"error: {readme} has no {start} ... {end} block to fill")
    head, rest = text.split(start, 1)
    block = "\n".join(grid(rows, README_COLUMNS))
    write_text_atomic(f"{head}{start}\n{block}\n{end}{rest.split(end, 1)[1]}", readme)


def markdown(rows: list[dict[str, str]], experiments: list[Experiment], pairs: list[dict[str, str]]) -> str:
    lines = grid(rows, COLUMNS)
    compared = grid(pairs, tuple(pairs[0])) if pairs else ["(no pair has finished seeds in both rows yet)"]
    sources = sorted({(e.paper["row"], e.paper.get("source", "")) for e in experiments})
    notes = [f"- {row}: {source}" for row, source in sources if source]
    return (
        "# The paper's tables beside ours\n\nTest accuracy (%) at the best-validation epoch; ours is mean ± std "
        "over the seeds that finished; a diverged run (its loss or its gradient norm stopped being finite) is counted, "
        "not averaged, and where every seed diverged the test accuracy of each one's best-validation weights is "
        'listed. A run still training shows as "in progress" (results/in_progress/), never as a seed. `delta` is '
        "ours minus the paper's only where our protocol is the paper's; a reduced row is compared with the other rows "
        "of its own scale below. Made by `make tables` from "
        "`results/runs/`; each record there carries its command, seed, git revision and hardware.\n\n"
        + "\n".join(lines)
        + "\n\n## The paper's comparisons, at equal scale\n\nORGaNICs against the LSTM and learned against fixed time "
        "constants, wherever both rows ran at the same scale and task: the difference of the mean test accuracies "
        "and whether it exceeds the spread over seeds (the larger of the two standard deviations).\n\n"
        + "\n".join(compared)
        + "\n\nWhere each paper number comes from:\n"
        + "\n".join(notes)
        + "\n"
    )


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    parser = argparse.ArgumentParser(prog="organics-bench-tables", description=__doc__.split("\n\n")[0])
    parser.add_argument("--results-dir", type=Path, default=Path("results"), help="holds runs/ (default: results)")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="markdown path (default: <results-dir>/tables/paper.md); the CSV goes beside it",
    )
    parser.add_argument(
        "--readme",
        type=Path,
        default=None,
        help=f"also fill the compact table between {README_MARKERS[0]} markers of this file",
    )
    args = parser.parse_args(argv)
    if not args.results_dir.is_dir():
        print(
            f"error: no results dir {args.results_dir}; run from the repository root or pass --results-dir",
            file=sys.stderr,
        )
        sys.exit(2)
    experiments = paper_experiments()
    rows = [table_row(e, args.results_dir.resolve()) for e in experiments]
    out = args.out or args.results_dir / "tables" / "paper.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(markdown(rows, experiments, comparisons(experiments, args.results_dir.resolve())), out)
    write_text_atomic(buffer.getvalue(), out.with_suffix(".csv"))
    if args.readme:
        replace_readme_block(args.readme, rows)
    print(f"table: {out} ({sum(r['ours'] != 'not yet run' for r in rows)} of {len(rows)} rows measured)")
