"""`organics-bench-leaderboard`: the stability leaderboard's table and figure, from the sweep's published records.

    organics-bench -m experiment=stability/leaderboard publish=true   # the sweep (`make leaderboard` runs both)
    organics-bench-leaderboard         # -> results/tables/stability.md and results/figures/stability.png

One cell per model entry x learning rate that `conf/experiment/stability/leaderboard.yaml` declares (its
`hydra.sweeper.params`): fraction of seeds diverged, fraction of optimizer steps whose total gradient norm exceeds a
stated threshold (mean over seeds; a non-finite norm counts as above), the largest finite gradient norm, and test
accuracy at the best-validation epoch (mean ± std over the seeds that finished without diverging). Each cell is
composed as the sweep composes it, and only records with that cell's config hash (`records.config_hash`) count, so
runs of another config under the same experiment name are reported and never averaged in. A sweep run with extra
overrides (a longer one: `trainer.epochs=20`) is read with the same overrides: `--override trainer.epochs=20`.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from hydra import compose, initialize_config_module
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from omegaconf import OmegaConf

from organics_bench.io import finite_or_none, write_text_atomic
from organics_bench.report import diverged, load_records
from organics_bench.training.records import FINISHED, config_hash, job_config

EXPERIMENT = "stability/leaderboard"  # the experiment choice whose sweep this reads
THRESHOLDS = ("1", "10", "100", "1000")  # the levels of the records' grad_norm.fraction_above
DEFAULT_THRESHOLD = "10"


@dataclass
class Cell:
    """One model entry at one learning rate: the config the sweep runs there, and the records that match it."""

    entry: str
    label: str
    lr: float
    hash: str
    experiment_name: str
    records: list[dict] = field(default_factory=list)

    def summary(self, threshold: str = DEFAULT_THRESHOLD) -> dict:
        """The cell's numbers (None where nothing was measured)."""
        finished = [r for r in self.records if r["status"] in FINISHED]
        accs = [
            acc
            for r in finished
            if not diverged(r) and (acc := finite_or_none(r["metrics"].get("test/acc"))) is not None
        ]
        above = [
            value
            for r in finished
            if (value := finite_or_none((r["grad_norm"].get("fraction_above") or {}).get(threshold))) is not None
        ]
        maxima = [value for r in finished if (value := finite_or_none(r["grad_norm"].get("max"))) is not None]
        n_diverged = sum(map(diverged, finished))
        return {
            "runs": len(finished),
            "diverged": n_diverged,
            "fraction_diverged": n_diverged / len(finished) if finished else None,
            "fraction_above": statistics.mean(above) if above else None,
            "max_grad_norm": max(maxima) if maxima else None,
            "nonfinite_runs": sum((r["grad_norm"].get("nonfinite_steps") or 0) > 0 for r in finished),
            "acc_mean": statistics.mean(accs) if accs else None,
            "acc_std": (statistics.stdev(accs) if len(accs) > 1 else 0.0) if accs else None,
            "acc_runs": len(accs),
            "n_params": sorted({r["n_params"] for r in finished}),
            "unfinished": len(self.records) - len(finished),
        }


def declared_sweep() -> dict[str, list[str]]:
    """The sweep lists of the leaderboard experiment (`hydra.sweeper.params`), as the config file declares them."""
    path = resources.files("organics_bench.conf").joinpath("experiment", *f"{EXPERIMENT}.yaml".split("/"))
    params = OmegaConf.create(path.read_text()).hydra.sweeper.params
    return {key: [item.strip() for item in str(value).split(",")] for key, value in params.items()}


def cell_config(entry: str, lr: str, overrides: list[str] = ()) -> dict:
    """The resolved job config the sweep runs for one model entry at one lr (call inside `initialize_config_module`)."""
    cfg = compose(
        "config",
        overrides=[f"experiment={EXPERIMENT}", f"leaderboard={entry}", f"optimizer.lr={lr}", *overrides],
        return_hydra_config=True,
    )
    HydraConfig.instance().set_config(cfg)
    return job_config(cfg)


def expected_cells(overrides: list[str] = ()) -> list[Cell]:
    """Every declared model entry x learning rate, composed as the sweep composes it (plus `overrides`)."""
    return [Cell(*spec) for spec in _cell_specs(tuple(overrides))]


@functools.lru_cache(maxsize=8)
def _cell_specs(overrides: tuple[str, ...]) -> tuple[tuple[str, str, float, str, str], ...]:
    sweep = declared_sweep()
    specs = []
    with initialize_config_module("organics_bench.conf", version_base="1.3"):
        for entry in sweep["leaderboard"]:
            for lr in sweep["optimizer.lr"]:
                job = cell_config(entry, lr, list(overrides))
                specs.append(
                    (
                        entry,
                        job["leaderboard"]["label"],
                        float(job["optimizer"]["lr"]),
                        config_hash(job),
                        job["experiment_name"],
                    )
                )
    return tuple(specs)


def first_cell_config(overrides: list[str] = ()) -> dict:
    """The config of the sweep's first cell: its experiment name, and the settings every cell shares."""
    sweep = declared_sweep()
    with initialize_config_module("organics_bench.conf", version_base="1.3"):
        return cell_config(sweep["leaderboard"][0], sweep["optimizer.lr"][0], overrides)


def fill(cells: list[Cell], records: list[dict]) -> list[dict]:
    """Give each cell its records (matched by config hash); return the records no cell takes."""
    by_hash = {cell.hash: cell for cell in cells}
    others = []
    for record in records:
        digest = record.get("config_hash") or config_hash(record["config"])
        if digest in by_hash:
            by_hash[digest].records.append(record)
        else:
            others.append(record)
    return others


def _pct(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{100 * value:.{digits}f}%"


def _acc(summary: dict) -> str:
    if summary["acc_mean"] is None:
        return "-"
    text = f"{100 * summary['acc_mean']:.2f} ± {100 * summary['acc_std']:.2f}"
    return text if summary["acc_runs"] == summary["runs"] else f"{text} (n={summary['acc_runs']})"


def _grad(summary: dict) -> str:
    text = "-" if summary["max_grad_norm"] is None else f"{summary['max_grad_norm']:.3g}"
    if summary["nonfinite_runs"]:
        text += f", non-finite in {summary['nonfinite_runs']} run{'s' * (summary['nonfinite_runs'] > 1)}"
    return text


def _lr(lr: float) -> str:
    return f"{lr:g}"


def cell_rows(cells: list[Cell], threshold: str) -> list[str]:
    lines = [
        f"| model | lr | runs | diverged | steps with grad norm > {threshold} | max grad norm | test acc (%) |",
        "|---|---|---|---|---|---|---|",
    ]
    for cell in cells:
        s = cell.summary(threshold)
        if not s["runs"]:
            lines.append(f"| {cell.label} | {_lr(cell.lr)} | not yet run | - | - | - | - |")
            continue
        lines.append(
            f"| {cell.label} | {_lr(cell.lr)} | {s['runs']} | {s['diverged']}/{s['runs']} "
            f"| {_pct(s['fraction_above'])} | {_grad(s)} | {_acc(s)} |"
        )
    return lines


def model_summary(cells: list[Cell], threshold: str) -> dict:
    """One model entry over every lr: runs, divergence, the largest lr none of whose seeds diverged, the lr of the
    best mean test accuracy, the mean fraction of steps above `threshold` over all runs, the largest grad norm."""
    summaries = [(cell, cell.summary(threshold)) for cell in cells]
    measured = [(cell, s) for cell, s in summaries if s["runs"]]
    runs = [r for cell in cells for r in cell.records if r["status"] in FINISHED]
    above = [
        value
        for r in runs
        if (value := finite_or_none((r["grad_norm"].get("fraction_above") or {}).get(threshold))) is not None
    ]
    maxima = [s["max_grad_norm"] for _, s in measured if s["max_grad_norm"] is not None]
    stable = [cell.lr for cell, s in measured if s["diverged"] == 0]
    scored = [(s["acc_mean"], cell, s) for cell, s in measured if s["acc_mean"] is not None]
    best = max(scored, key=lambda t: t[0]) if scored else None
    return {
        "label": cells[0].label,
        "entry": cells[0].entry,
        "n_params": sorted({n for _, s in measured for n in s["n_params"]}),
        "runs": len(runs),
        "diverged": sum(map(diverged, runs)),
        "lrs_measured": len(measured),
        "lrs_declared": len(cells),
        "largest_stable_lr": max(stable) if stable else None,
        "best_lr": best[1].lr if best else None,
        "best_acc": best[2] if best else None,
        "fraction_above": statistics.mean(above) if above else None,
        "max_grad_norm": max(maxima) if maxima else None,
    }


def summary_rows(cells: list[Cell], threshold: str) -> list[str]:
    lines = [
        "| model | entry | params | runs | diverged | largest lr with no diverged seed | best lr: test acc (%) "
        f"| steps with grad norm > {threshold} (all runs) | max grad norm |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for entry in dict.fromkeys(cell.entry for cell in cells):
        m = model_summary([cell for cell in cells if cell.entry == entry], threshold)
        params = "/".join(f"{n:,}" for n in m["n_params"]) or "-"
        if not m["runs"]:
            lines.append(f"| {m['label']} | `{entry}` | - | not yet run | - | - | - | - | - |")
            continue
        coverage = (
            "" if m["lrs_measured"] == m["lrs_declared"] else f" ({m['lrs_measured']} of {m['lrs_declared']} lrs)"
        )
        stable = "none" if m["largest_stable_lr"] is None else _lr(m["largest_stable_lr"])
        best = "-" if m["best_lr"] is None else f"{_lr(m['best_lr'])}: {_acc(m['best_acc'])}"
        maximum = "-" if m["max_grad_norm"] is None else f"{m['max_grad_norm']:.3g}"
        lines.append(
            f"| {m['label']} | `{entry}` | {params} | {m['runs']}{coverage} | {m['diverged']}/{m['runs']} "
            f"| {stable} | {best} | {_pct(m['fraction_above'])} | {maximum} |"
        )
    return lines


def provenance(cells: list[Cell]) -> list[str]:
    """Where the records are, and the git revisions, hardware and an example command behind them."""
    runs = [r for cell in cells for r in cell.records]
    revisions = sorted({r.get("git_revision", "?") for r in runs})
    hardware = sorted({f"{r['env']['hardware']}, torch {r['env']['torch']}" for r in runs if "env" in r})
    example = next((r["command"] for r in runs if r.get("command")), None)
    lines = [f"- git revisions: {', '.join(revisions) or '-'}", f"- hardware: {'; '.join(hardware) or '-'}"]
    if example:
        lines.append(f"- one run's command: `{example}`")
    return lines


def markdown(
    cells: list[Cell], threshold: str, folder: str, others: list[dict], overrides: list[str], shared: dict
) -> str:
    """The leaderboard page; `shared` is one cell's config (the settings all cells share)."""
    sweep = declared_sweep()
    extra = f" {' '.join(overrides)}" if overrides else ""
    task, trainer = shared["task"], shared["trainer"]
    head = [
        "# Stability leaderboard",
        "",
        f"Every sequence model under the same conditions, no gradient clipping: {task['name']} at "
        f"{task['image_size']}x{task['image_size']} (one pixel a step), {task['source']} digits, {trainer['epochs']} "
        f"epochs of batch {trainer['batch_size']}, Adam at a constant learning rate (weight decay "
        f"{shared['optimizer']['weight_decay']:g}); each model with the CPU-scale settings of its `cpu/table2` row "
        "(64 units, time constants x 4 for 196 steps; `conf/leaderboard/<entry>.yaml`). Learning rates "
        f"{', '.join(sweep['optimizer.lr'])} x seeds {', '.join(sweep['seed'])}.",
        "",
        f"Made by `organics-bench -m experiment={EXPERIMENT} publish=true{extra}`"
        f"{'' if extra else ' (`make leaderboard`)'} and "
        f"`organics-bench-leaderboard`, from the records under `{folder}/` (experiment `{shared['experiment_name']}`).",
        "",
        "Columns: runs = seeds that finished (ok or diverged); diverged = the loss or the total gradient norm became "
        "non-finite (a norm past float32's range leaves Adam's second moment inf and those weights frozen; runs "
        "recorded before the trainer stopped there say ok and count here as diverged); steps with "
        f"grad norm > {threshold} = fraction of optimizer steps whose total gradient L2 norm exceeds {threshold} (a "
        "non-finite norm counts as above), mean over those runs; max grad norm = the largest finite norm of any "
        "step of any of them; test acc = test accuracy at the best-validation epoch, mean ± std over the seeds that "
        "did not diverge (n = how many, when fewer than runs).",
        "",
    ]
    lines = [*head, *cell_rows(cells, threshold), "", "## Per model", "", *summary_rows(cells, threshold), ""]
    unfinished = sum(cell.summary(threshold)["unfinished"] for cell in cells)
    if unfinished:
        lines += [
            f"{unfinished} records of these configs did not finish (interrupted or failed) and are not counted.",
            "",
        ]
    if others:
        lines += [
            f"{len(others)} records under `{folder}/` are of other configs (not the declared sweep; another "
            "epoch count or settings) and are not counted.",
            "",
        ]
    return "\n".join([*lines, "Provenance:", *provenance(cells), ""])


def plot(cells: list[Cell], path: Path, threshold: str) -> Path:
    """Test accuracy, fraction diverged and fraction of steps above the threshold against lr, one line per model."""
    from organics_bench.plots import plt, save_figure

    entries = list(dict.fromkeys(cell.entry for cell in cells))
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.8), constrained_layout=True)
    markers = "osD^v<>pXh*P"
    for k, entry in enumerate(entries):
        rows = [(cell, cell.summary(threshold)) for cell in cells if cell.entry == entry]
        rows = [(cell, s) for cell, s in rows if s["runs"]]
        if not rows:
            continue
        dodge = 10 ** (0.025 * (k - (len(entries) - 1) / 2))  # spread overlapping markers along the log axis
        style = {
            "marker": markers[k % len(markers)],
            "markersize": 5,
            "color": plt.cm.tab10(k % 10),
            "label": rows[0][0].label,
        }
        acc = [
            (cell.lr * dodge, 100 * s["acc_mean"], 100 * s["acc_std"]) for cell, s in rows if s["acc_mean"] is not None
        ]
        if acc:
            xs, ys, errs = zip(*acc)
            axes[0].errorbar(xs, ys, yerr=errs, capsize=3, **style)
        axes[1].plot([cell.lr * dodge for cell, _ in rows], [s["fraction_diverged"] for _, s in rows], **style)
        above = [(cell.lr * dodge, s["fraction_above"]) for cell, s in rows if s["fraction_above"] is not None]
        if above:
            axes[2].plot(*zip(*above), **style)
    panels = (
        "test accuracy (%), mean ± std of finished seeds",
        "fraction of seeds diverged",
        f"fraction of steps with grad norm > {threshold}",
    )
    for ax, ylabel in zip(axes, panels):
        ax.set_xscale("log")
        ax.set_xlabel("learning rate (Adam, constant; markers dodged sideways)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    axes[0].axhline(10, color="0.5", linestyle=":", linewidth=1)  # chance: 10 classes
    axes[1].set_ylim(-0.05, 1.05)
    axes[2].set_ylim(-0.05, 1.05)
    handles, labels = axes[1].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside right center")
    fig.suptitle("Stability leaderboard: psMNIST 14x14, no gradient clipping")
    return save_figure(fig, path)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    parser = argparse.ArgumentParser(prog="organics-bench-leaderboard", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--results-dir", type=Path, default=Path("results"), help="holds runs/<experiment>/ (default: results)"
    )
    parser.add_argument("--table", type=Path, help="markdown path (default: <results-dir>/tables/stability.md)")
    parser.add_argument("--figure", type=Path, help="PNG path (default: <results-dir>/figures/stability.png)")
    parser.add_argument(
        "--threshold",
        choices=THRESHOLDS,
        default=DEFAULT_THRESHOLD,
        help=f"gradient-norm level for the fraction of steps above it (default {DEFAULT_THRESHOLD})",
    )
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an override the sweep was run with besides its own lists (repeatable)",
    )
    args = parser.parse_args(argv)
    try:
        shared = first_cell_config(args.override)
        folder = args.results_dir / "runs" / shared["experiment_name"]
        records = load_records(folder) if folder.is_dir() else []
        if not records:
            print(
                f"error: no results records (seed<k>.json) under {folder}; run the sweep first: "
                f"organics-bench -m experiment={EXPERIMENT} publish=true",
                file=sys.stderr,
            )
            sys.exit(2)
        cells = expected_cells(args.override)
    except HydraException as err:
        print(
            f"error: the sweep's configs do not compose with --override {args.override}: {str(err).splitlines()[0]}",
            file=sys.stderr,
        )
        sys.exit(2)
    others = fill(cells, records)
    table = args.table or args.results_dir / "tables" / "stability.md"
    figure = args.figure or args.results_dir / "figures" / "stability.png"
    write_text_atomic(markdown(cells, args.threshold, str(folder), others, args.override, shared), table)
    plot(cells, figure, args.threshold)
    measured = sum(bool(cell.summary()["runs"]) for cell in cells)
    print(
        f"table: {table} ({measured} of {len(cells)} model x lr cells measured, {len(records) - len(others)} runs;"
        f" {len(others)} records of other configs not counted)"
    )
    print(f"figure: {figure}")


if __name__ == "__main__":
    main()
