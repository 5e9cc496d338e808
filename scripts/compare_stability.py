"""Compare the stability diagnostics of trained sequence models side by side (the README's Stability section).

    python scripts/compare_stability.py "W_r = 2I at init (paper era)=results/runs/<exp>/organics/seed0.json" \
        "W_r = I=results/runs/<exp2>/organics/seed0.json" --out results/stability/psmnist_cpu

Each argument is LABEL=PATH, PATH a published record (its `seed<k>.diagnostics.json` beside it) or a run dir
(its spectra/ and gradient_flow/ folders). Writes <out>.png (max Re(λ) over training, the final eigenvalues, the
final gradient flow through time), <out>.json (the numbers, with each run's command and git revision) and <out>.md.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from organics_bench.io import write_json_atomic, write_text_atomic
from organics_bench.plots import plt, save_figure
from organics_bench.training.records import collect_diagnostics


def load_run(path: Path) -> tuple[dict, dict]:
    """(record, diagnostics) of a published record or a run dir."""
    if path.is_dir():
        return json.loads((path / "metrics.json").read_text()), collect_diagnostics(path)
    diagnostics = path.with_name(path.stem + ".diagnostics.json")
    if not diagnostics.is_file():
        raise SystemExit(f"error: {diagnostics} not found; pass the run dir of {path.name} instead")
    return json.loads(path.read_text()), json.loads(diagnostics.read_text())


def summarise(record: dict, diagnostics: dict) -> dict:
    """The numbers the README quotes: per measurement, the worst max Re(λ) over probe inputs and probe times; at the
    end, the eigenvalues of the first probe input at the last step and the gradient norm at the first / last step."""
    spectra, flows = diagnostics["spectra"], diagnostics["gradient_flow"]
    final_flow = list(flows[-1]["grad_norm_by_time"]) if flows else []
    last_time = spectra[-1]["times"][-1] if spectra else None
    return {
        "command": record["command"],
        "git_revision": record["git_revision"],
        "seed": record["seed"],
        "status": record["status"],
        "test_acc": record["metrics"].get("test/acc"),
        "statistic": spectra[0]["statistic"] if spectra else None,
        "steps": [s["step"] for s in spectra],
        "worst_by_step": [s["worst"] for s in spectra],
        "fraction_of_probes_unstable_final": (
            sum(v >= 0 for t in spectra[-1]["times"] for v in t["per_input"])
            / max(1, sum(len(t["per_input"]) for t in spectra[-1]["times"]))
        )
        if spectra
        else None,
        "final_eigenvalues": last_time["eigenvalues"] if last_time else None,
        "final_grad_norm_first_step": final_flow[0] if final_flow else None,
        "final_grad_norm_last_step": final_flow[-1] if final_flow else None,
        "final_grad_norm_by_time": final_flow,
    }


def plot(summaries: dict[str, dict], path: Path) -> Path:
    fig, (over, eig, flow) = plt.subplots(1, 3, figsize=(17, 4.8), constrained_layout=True)
    for label, s in summaries.items():
        over.plot(s["steps"], s["worst_by_step"], marker="o", markersize=3, label=label)
        if s["final_eigenvalues"]:
            eig.scatter(s["final_eigenvalues"]["re"], s["final_eigenvalues"]["im"], s=10, alpha=0.6, label=label)
        if s["final_grad_norm_by_time"]:
            flow.plot(range(1, len(s["final_grad_norm_by_time"]) + 1), s["final_grad_norm_by_time"], label=label)
    over.axhline(0.0, color="k", lw=1, ls="--", label="stability boundary")
    over.set(
        xlabel="training step",
        ylabel="max Re(λ) of the Jacobian (worst over probe inputs and times)",
        title="local stability along the probe trajectory",
    )
    eig.axvline(0.0, color="k", lw=1, ls="--")
    eig.set(xlabel="Re(λ)", ylabel="Im(λ)", title="eigenvalues after training (first probe input, last step)")
    flow.set_yscale("log")
    flow.set(xlabel="time step t", ylabel="||∂L/∂state_t||", title="gradient flow through time after training")
    for ax in (over, eig, flow):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return save_figure(fig, path)


def markdown(summaries: dict[str, dict]) -> str:
    lines = [
        "| cell | test acc | max Re(λ) first / last measurement | probe states unstable at the end | "
        "||∂L/∂state_1|| / ||∂L/∂state_T|| at the end |",
        "|---|---|---|---|---|",
    ]
    for label, s in summaries.items():
        ratio = (
            s["final_grad_norm_first_step"] / s["final_grad_norm_last_step"]
            if s["final_grad_norm_last_step"]
            else math.nan
        )
        lines.append(
            f"| {label} | {s['test_acc']:.4f} | {s['worst_by_step'][0]:.4g} / {s['worst_by_step'][-1]:.4g} "
            f"| {s['fraction_of_probes_unstable_final']:.0%} | {ratio:.3g} |"
        )
    made = "\n".join(
        f"- {label}: `{s['command']}` (seed {s['seed']}, git {s['git_revision']})" for label, s in summaries.items()
    )
    return "\n".join(lines) + f"\n\nRuns:\n{made}\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="LABEL=PATH (a published seed<k>.json or a run dir)")
    parser.add_argument("--out", type=Path, required=True, help="output stem: writes <out>.png, .json and .md")
    args = parser.parse_args(argv)
    summaries = {}
    for spec in args.runs:
        label, sep, path = spec.rpartition("=")
        if not sep or not Path(path).exists():
            raise SystemExit(f"error: {spec!r} is not LABEL=PATH with an existing PATH")
        record, diagnostics = load_run(Path(path))
        if not diagnostics["spectra"]:
            raise SystemExit(f"error: {path} has no spectra (was diagnostics=none?)")
        summaries[label] = summarise(record, diagnostics)
    command = "python scripts/compare_stability.py " + " ".join(f"'{r}'" for r in args.runs) + f" --out {args.out}"
    write_json_atomic({"command": command, "runs": summaries}, args.out.with_suffix(".json"))
    write_text_atomic(markdown(summaries) + f"\nMade by `{command}`.\n", args.out.with_suffix(".md"))
    print(f"figure: {plot(summaries, args.out.with_suffix('.png'))}")


if __name__ == "__main__":
    sys.exit(main())
