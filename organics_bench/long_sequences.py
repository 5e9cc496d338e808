"""`organics-bench-long-sequences`: the long-sequence tables and figures (README 'Long sequences'), from published
records under results/runs/ (docs/protocols.md, 'Parity tasks' and 'Adding problem').

    organics-bench-long-sequences           # = make long-sequences
    -> results/tables/long_sequences_parity.md,  results/figures/long_sequences_parity.png
       results/tables/long_sequences_adding.md,  results/figures/long_sequences_adding.png
       results/figures/long_sequences_gradient_flow.png
    organics-bench-long-sequences --chosen-lr adding200   # each model's rate from the grid (make adding's stage 2)

Runs are grouped by config hash (seeds of one config); a group's label is its adding entry's (`adding.label`) or its
model's, with "(W_r = I)" for ORGaNICs with recurrence=identity. Accuracies and MSEs are over the seeds that finished
without diverging; diverged runs are counted, never averaged in. A part whose records are missing is skipped and
said so; with none at all, one `error:` line and exit 2.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

from organics_bench.errors import UserError
from organics_bench.io import finite_or_none, write_text_atomic
from organics_bench.report import diverged, load_records, provenance
from organics_bench.training.records import FINISHED

PARITY_EXPERIMENT = "parity"
ADDING_EXPERIMENTS = ("adding200", "adding1000")
GRID_SEED = 0  # the adding problem's learning-rate grid runs this seed; each model's rate is chosen on it alone
SOLVED_MSE = 0.01  # "solved": validation MSE at or below this (coRNN and LEM report when their curves cross it)
BASELINE_MSE = 1 / 6  # the always-1 predictor (tasks/adding.py)
LABELS = {
    "organics": "ORGaNICs",
    "organics_fixed_tau": "ORGaNICs (fixed tau)",
    "lstm": "LSTM",
    "gru": "GRU",
    "rnn": "tanh RNN",
    "ssn": "SSN",
    "cornn": "coRNN",
    "lipschitz_rnn": "Lipschitz RNN",
    "antisymmetric_rnn": "AntisymmetricRNN",
}


@dataclass
class Group:
    """The runs of one config (all its seeds) and what the report needs of them."""

    label: str
    lr: float
    length: int | None
    records: list[dict] = field(default_factory=list)

    @property
    def finished(self) -> list[dict]:
        return [r for r in self.records if r["status"] in FINISHED]

    @property
    def good(self) -> list[dict]:
        """Finished without diverging: the runs whose numbers are averaged."""
        return [r for r in self.finished if not diverged(r)]

    @property
    def n_diverged(self) -> int:
        return sum(map(diverged, self.finished))

    @property
    def max_grad_norm(self) -> float | None:
        norms = [v for r in self.finished if (v := finite_or_none(r["grad_norm"].get("max"))) is not None]
        return max(norms) if norms else None

    @property
    def seeds(self) -> list[int]:
        return sorted(r["seed"] for r in self.finished)


def label(record: dict) -> str:
    """The name a run is shown under: its adding entry's label, else its model's (ORGaNICs' W_r = I marked)."""
    config = record.get("config") or {}
    if (entry := config.get("adding")) and entry.get("label"):
        return entry["label"]
    name = LABELS.get(record["model"], record["model"])
    if (config.get("model") or {}).get("recurrence") == "identity":
        name += " (W_r = I)"
    return name


def load_experiment(results_dir: Path, experiment: str) -> list[dict]:
    """The records of results/runs/<experiment>/ with their history and, as "diagnostics", their
    seed<k>.diagnostics.json (None where the run published none)."""
    folder = results_dir / "runs" / experiment
    if not folder.is_dir():
        return []
    records = load_records(folder)
    for record in records:
        path = folder / record["model"] / record["config_hash"] / f"seed{record['seed']}.diagnostics.json"
        record["diagnostics"] = json.loads(path.read_text()) if path.exists() else None
    return records


def group(records: list[dict]) -> list[Group]:
    """One group per config hash, in order of label, then length, then lr."""
    groups: dict[str, Group] = {}
    for record in records:
        config = record.get("config") or {}
        if record["config_hash"] not in groups:
            groups[record["config_hash"]] = Group(
                label(record), float(config["optimizer"]["lr"]), (config.get("task") or {}).get("length")
            )
        groups[record["config_hash"]].records.append(record)
    return sorted(groups.values(), key=lambda g: (g.label, g.length or 0, g.lr))


def mean_std(values: list[float]) -> tuple[float, float] | None:
    """Mean and sample standard deviation (0 for one value); None for none."""
    if not values:
        return None
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _pm(values: list[float], scale: float = 1.0, spec: str = ".1f") -> str:
    """Mean ± std of `values` (times `scale`, formatted by `spec`); one value alone, "—" for none."""
    stats = mean_std(values)
    if stats is None:
        return "—"
    mean = f"{scale * stats[0]:{spec}}"
    return mean if len(values) == 1 else f"{mean} ± {scale * stats[1]:{spec}}"


def _sci(value: float | None) -> str:
    return "—" if value is None else f"{value:.3g}"


def _line_style(index: int) -> dict:
    """A distinct colour and dash for the index-th line (ten colours, then dashed)."""
    from organics_bench.plots import plt

    return {"color": plt.cm.tab10(index % 10), "linestyle": "-" if index < 10 else "--"}


def _made_by(groups: list[Group]) -> list[str]:
    """The table's closing lines: the command, seed, git revision and hardware behind each of its runs."""
    return ["", "Made by:", provenance([r for g in groups for r in g.records])]


def _legend_outside(axes: list) -> None:
    """One legend beside the last of `axes` naming every labelled line of any of them (panels may differ)."""
    handles: dict[str, object] = {}
    for ax in axes:
        for handle, name in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(name, handle)
    axes[-1].legend(
        handles.values(), handles.keys(), fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0
    )


# ----- parity -------------------------------------------------------------------------------------------------------
def parity_accuracy(records: list[dict]) -> dict[int, list[float]]:
    """Test accuracy by test length, one value per run (the record's extra_tests.acc_by_length)."""
    by_length: dict[int, list[float]] = {}
    for record in records:
        for length, acc in ((record.get("extra_tests") or {}).get("acc_by_length") or {}).items():
            by_length.setdefault(int(length), []).append(acc)
    return dict(sorted(by_length.items()))


def parity_table(groups: list[Group], experiment: str) -> str:
    """Markdown: accuracy (%) per test length, mean ± std over the seeds that did not diverge; each seed's longest
    length solved at >= 99%; the largest gradient norm; diverged runs."""
    lengths = sorted({length for g in groups for length in parity_accuracy(g.good)})
    data = groups[0].records[0].get("data") or {}
    low, high = data.get("train_lengths") or ("?", "?")
    curriculum = data.get("curriculum_epochs")
    schedule = (
        f" (a curriculum: the longest string grows to {high} bits over the first {curriculum} epochs)"
        if curriculum
        else ""
    )
    per_length = (data.get("sizes") or {}).get("test_per_length")
    per_length = "?" if per_length is None else f"{per_length:,}"
    head = ["model", "lr", "seeds", *[f"acc @ {n} (%)" for n in lengths], "longest solved ≥ 99%", "max grad norm"]
    lines = [
        f"# Parity: length generalisation (`experiment=extension/{experiment}`)",
        "",
        f"Trained on bit strings of {low}-{high} bits{schedule}, tested on strings of exactly "
        f"each length ({per_length} per "
        "length); accuracy mean ± std over the seeds that finished without diverging (chance: 50%). 'longest solved'",
        "lists each such seed's longest test length at >= 99% accuracy. Generated by `organics-bench-long-sequences`",
        f"from results/runs/{experiment}/.",
        "",
        "| " + " | ".join([*head, "diverged"]) + " |",
        "|" + "---|" * (len(head) + 1),
    ]
    for g in groups:
        accs = parity_accuracy(g.good)
        solved = [(r.get("extra_tests") or {}).get("longest_solved_99") for r in g.good]
        cells = [
            g.label,
            f"{g.lr:g}",
            ", ".join(map(str, g.seeds)) or "—",
            *[_pm(accs.get(n, []), 100) for n in lengths],
            ", ".join("none" if s is None else str(s) for s in solved) or "—",
            _sci(g.max_grad_norm),
            f"{g.n_diverged} of {len(g.finished)}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join([*lines, *_made_by(groups)]) + "\n"


def plot_parity(groups: list[Group], path: Path) -> Path:
    """Accuracy against test length, mean ± std over seeds, one line per config."""
    from organics_bench.plots import plt, save_figure

    fig, ax = plt.subplots(figsize=(9.5, 4.8), constrained_layout=True)
    for k, g in enumerate(groups):
        accs = parity_accuracy(g.good)
        if not accs:
            continue
        stats = [mean_std(values) for values in accs.values()]
        ax.errorbar(
            list(accs),
            [100 * s[0] for s in stats],
            yerr=[100 * s[1] for s in stats],
            marker="o",
            capsize=3,
            **_line_style(k),
            label=f"{g.label} (lr {g.lr:g})",
        )
    ax.set_xscale("log", base=2)
    lengths = sorted({n for g in groups for n in parity_accuracy(g.good)})
    ax.set_xticks(lengths, [str(n) for n in lengths])
    ax.axhline(50, color="0.5", linestyle=":", linewidth=1, label="chance")
    ax.axhline(99, color="0.3", linestyle="--", linewidth=1, label="99% (solved)")
    ax.set_xlabel("test length (bits; trained on 1-40)")
    ax.set_ylabel("test accuracy (%), mean ± std over seeds")
    ax.grid(alpha=0.3)
    _legend_outside([ax])
    ax.set_title("Parity: length generalisation")
    return save_figure(fig, path)


# ----- adding problem -----------------------------------------------------------------------------------------------
def mse_curve(record: dict) -> list[tuple[int, float]]:
    """(iteration, validation MSE) after each epoch of the run's history; non-finite values left out."""
    points = []
    for row in record.get("history") or []:
        value = finite_or_none(float(row["val_loss"])) if row.get("val_loss") not in (None, "") else None
        if value is not None:
            points.append((int(row["step"]), value))
    return points


def iterations_to_solve(record: dict, threshold: float = SOLVED_MSE) -> int | None:
    """The first iteration after which the validation MSE is at or below `threshold`; None if never."""
    return next((step for step, mse in mse_curve(record) if mse <= threshold), None)


def adding_table(groups: list[Group], experiments: list[str]) -> str:
    """Markdown: per model, lr and length, the test MSE, the iterations to reach MSE 0.01, divergence and the largest
    gradient norm."""
    baselines = sorted(
        {
            (g.length, round(b["test_mse"], 4))
            for g in groups
            for r in g.records
            if (b := (r.get("data") or {}).get("baseline"))
        }
    )
    lines = [
        "# Adding problem (`experiment=extension/adding200`, `extension/adding1000`)",
        "",
        "Test MSE of the best-validation weights on the test set (1,000 sequences unless `task.n_test` says "
        "otherwise), mean ± std over the seeds that finished "
        f"without diverging; the always-1 predictor scores {BASELINE_MSE:.3f}"
        + (" (on the test sets: " + ", ".join(f"T = {t}: {m}" for t, m in baselines) + ")" if baselines else "")
        + f". 'iterations to MSE {SOLVED_MSE}' is each seed's first validation point (every 100 iterations) at or "
        "below it. Generated by `organics-bench-long-sequences` from "
        + ", ".join(f"results/runs/{e}/" for e in experiments)
        + f". Learning rates: a grid on seed {GRID_SEED} at the shortest T; each model's other seeds and longer T run "
        "at the rate whose grid run ends with the lower validation MSE (`--chosen-lr`), so a model's rows with more "
        "seeds are its chosen rate.",
        "",
        f"| T | model | lr | seeds | test MSE | iterations to MSE {SOLVED_MSE} | max grad norm | diverged | params |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for g in sorted(groups, key=lambda g: (g.length or 0, g.label, g.lr)):
        mse = [v for r in g.good if (v := finite_or_none(r["metrics"].get("test/loss"))) is not None]
        solved = [iterations_to_solve(r) for r in g.good]
        params = sorted({r["n_params"] for r in g.records})
        cells = [
            str(g.length),
            g.label,
            f"{g.lr:g}",
            ", ".join(map(str, g.seeds)) or "—",
            _pm(mse, spec=".3g"),
            ", ".join("not reached" if s is None else f"{s:,}" for s in solved) or "—",
            _sci(g.max_grad_norm),
            f"{g.n_diverged} of {len(g.finished)}",
            ", ".join(f"{p:,}" for p in params),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join([*lines, *_made_by(groups)]) + "\n"


def chosen_per_label(groups: list[Group]) -> list[Group]:
    """Each label's group at its chosen learning rate: the lowest final validation MSE of the grid seed's run
    (`GRID_SEED`; a diverged or missing one scores worst, a tie keeps the lower rate). Scoring that seed alone keeps
    the choice fixed once the other seeds have run at it."""

    def score(g: Group) -> float:
        runs = [r for r in g.good if r["seed"] == GRID_SEED and mse_curve(r)]
        return mse_curve(runs[0])[-1][1] if runs else math.inf

    best: dict[str, Group] = {}
    for g in groups:
        if g.label not in best or score(g) < score(best[g.label]):
            best[g.label] = g
    return list(best.values())


def chosen_lr_overrides(results_dir: Path, experiment: str) -> list[str]:
    """The Hydra overrides that run each adding entry at its chosen rate (`chosen_per_label`) on `experiment`'s
    grid: one line per rate, `adding=<entry>,<entry> optimizer.lr=<rate>`."""
    groups = group(load_experiment(results_dir, experiment))
    if not groups:
        raise UserError(f"no records under {results_dir}/runs/{experiment}/: run its learning-rate grid first")
    by_lr: dict[float, list[str]] = {}
    for g in chosen_per_label(groups):
        entry = ((g.records[0].get("config") or {}).get("adding") or {}).get("entry")
        if entry is None:
            raise UserError(f"results/runs/{experiment}/ holds a run without an adding entry ({g.label})")
        by_lr.setdefault(g.lr, []).append(entry)
    return [f"adding={','.join(sorted(entries))} optimizer.lr={lr:g}" for lr, entries in sorted(by_lr.items())]


def plot_adding(groups: list[Group], path: Path) -> Path:
    """Validation MSE against iterations, one panel per length, each model at its chosen lr (one line per seed)."""
    from organics_bench.plots import plt, save_figure

    lengths = sorted({g.length for g in groups})
    fig, axes = plt.subplots(
        1, len(lengths), figsize=(6.5 * len(lengths) + 2, 4.8), constrained_layout=True, squeeze=False
    )
    labels = sorted({g.label for g in groups})
    for ax, length in zip(axes[0], lengths):
        for g in chosen_per_label([g for g in groups if g.length == length]):
            style = _line_style(labels.index(g.label))
            for i, record in enumerate(g.finished):
                if curve := mse_curve(record):
                    ax.plot(*zip(*curve), **style, linewidth=1.2, label=None if i else f"{g.label} (lr {g.lr:g})")
        ax.axhline(BASELINE_MSE, color="0.3", linestyle="--", linewidth=1, label="always 1 (0.167)")
        ax.axhline(SOLVED_MSE, color="0.5", linestyle=":", linewidth=1, label=f"MSE {SOLVED_MSE}")
        ax.set_yscale("log")
        ax.set_xlabel("iterations (batches of 50)")
        ax.set_ylabel("validation MSE (1,000 held-out sequences)")
        ax.set_title(f"Adding problem, T = {length}")
        ax.grid(alpha=0.3)
    _legend_outside(list(axes[0]))
    return save_figure(fig, path)


# ----- gradient flow through time -----------------------------------------------------------------------------------
def flow_endpoints(record: dict) -> tuple[list[float], list[float]] | None:
    """||dL/d state_t|| over t at initialisation (the first measurement, step 0) and after training (the last)."""
    flows = (record.get("diagnostics") or {}).get("gradient_flow") or []
    if len(flows) < 2 or flows[0]["step"] != 0:
        return None
    return flows[0]["grad_norm_by_time"], flows[-1]["grad_norm_by_time"]


def plot_gradient_flow(groups: list[Group], path: Path) -> Path:
    """Two panels (at initialisation, after training): ||dL/d h_t|| against t for each model at its chosen lr (its
    lowest seed) at the longest length run."""
    from organics_bench.plots import plt, save_figure

    length = max(g.length for g in groups)
    chosen = chosen_per_label([g for g in groups if g.length == length])
    labels = sorted({g.label for g in groups})
    fig, axes = plt.subplots(1, 2, figsize=(15, 4.8), constrained_layout=True, sharey=True)
    for g in chosen:
        runs = sorted((r for r in g.records if flow_endpoints(r)), key=lambda r: r["seed"])
        if not runs:
            continue
        style = _line_style(labels.index(g.label))
        for ax, norms in zip(axes, flow_endpoints(runs[0])):
            points = [(t + 1, n) for t, n in enumerate(norms) if math.isfinite(n) and n > 0]
            if points:
                ax.plot(*zip(*points), **style, linewidth=1.2, label=f"{g.label} (lr {g.lr:g})")
    for ax, when in zip(axes, ("at initialisation", "after training")):
        ax.set_yscale("log")
        ax.set_xlabel("step t")
        ax.set_title(f"{when}, adding problem T = {length}")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("||dL/d state_t|| (mean over 4 probe sequences)")
    _legend_outside(list(axes))
    return save_figure(fig, path)


# ----- command ------------------------------------------------------------------------------------------------------
def build(results_dir: Path, parity: str = PARITY_EXPERIMENT, adding: tuple[str, ...] = ADDING_EXPERIMENTS) -> list:
    """Write every part whose records exist; returns the paths written. A `UserError` (nothing written) when no part
    has records."""
    tables, figures = results_dir / "tables", results_dir / "figures"
    parity_groups = group(load_experiment(results_dir, parity))
    adding_groups = group([r for name in adding for r in load_experiment(results_dir, name)])
    if not parity_groups and not adding_groups:
        raise UserError(
            f"no results records under {results_dir}/runs/ for {parity} or {', '.join(adding)}; run the sweeps "
            "first (make parity, make adding)"
        )
    written = []
    if parity_groups:
        write_text_atomic(parity_table(parity_groups, parity), tables / "long_sequences_parity.md")
        written += [
            tables / "long_sequences_parity.md",
            plot_parity(parity_groups, figures / "long_sequences_parity.png"),
        ]
    else:
        print(f"parity: no records under {results_dir}/runs/{parity}/; skipped")
    if adding_groups:
        write_text_atomic(adding_table(adding_groups, list(adding)), tables / "long_sequences_adding.md")
        written += [
            tables / "long_sequences_adding.md",
            plot_adding(adding_groups, figures / "long_sequences_adding.png"),
        ]
        if any(flow_endpoints(r) for g in adding_groups for r in g.records):
            written.append(plot_gradient_flow(adding_groups, figures / "long_sequences_gradient_flow.png"))
        else:
            print(
                "gradient flow: no published diagnostics (seed<k>.diagnostics.json) with a step-0 measurement; skipped"
            )
    else:
        print(f"adding: no records under {results_dir}/runs/ for {', '.join(adding)}; skipped")
    return written


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    parser = argparse.ArgumentParser(prog="organics-bench-long-sequences", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--results-dir", type=Path, default=Path("results"), help="holds runs/<experiment>/ (default: results)"
    )
    parser.add_argument("--parity", default=PARITY_EXPERIMENT, help="the parity experiment's name (default: parity)")
    parser.add_argument(
        "--adding",
        nargs="+",
        default=list(ADDING_EXPERIMENTS),
        help=f"the adding experiments' names (default: {' '.join(ADDING_EXPERIMENTS)})",
    )
    parser.add_argument(
        "--chosen-lr",
        metavar="EXPERIMENT",
        help="print the overrides that run each adding entry at the rate its grid chose, one line per rate",
    )
    args = parser.parse_args(argv)
    try:
        if args.chosen_lr:
            print("\n".join(chosen_lr_overrides(args.results_dir, args.chosen_lr)))
            return
        written = build(args.results_dir, args.parity, tuple(args.adding))
    except UserError as err:
        print(err, file=sys.stderr)
        sys.exit(2)
    for path in written:
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
