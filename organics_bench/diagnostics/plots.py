"""Figures of the dynamics diagnostics."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from organics_bench.plots import plt, save_figure


def plot_spectra(spectra: list[dict], path: Path) -> Path:
    """Left: the stability statistic over training (paper Fig. 6 for static models); right: the eigenvalues of the
    last measurement."""
    kind = spectra[0]["kind"]
    continuous = kind != "discrete"
    key, label = (
        ("layers", "layer {} ({} units)") if kind == "steady_state" else ("times", "state at step {} of the probe")
    )
    names = [
        label.format(i + 1, e["units"]) if kind == "steady_state" else label.format(e["step"])
        for i, e in enumerate(spectra[0][key])
    ]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5), constrained_layout=True)
    steps = [s["step"] for s in spectra]
    for index, name in enumerate(names):
        left.plot(steps, [s[key][index]["worst"] for s in spectra], marker="o", markersize=3, label=name)
    left.axhline(0.0 if continuous else 1.0, color="k", lw=1, ls="--", label="stability boundary")
    left.set_xlabel("training step")
    left.set_ylabel(
        {
            "continuous": "max Re(λ) of the vector field's Jacobian (1/step)",
            "discrete": "spectral radius of the step map's Jacobian",
            "steady_state": "max Re(λ) at the steady state (1/ms)",
        }[kind]
    )
    left.set_title("worst over probe inputs")
    left.legend(fontsize=8)
    left.grid(alpha=0.3)
    for name, entry in zip(names, spectra[-1][key]):
        if entry["eigenvalues"]:
            right.scatter(entry["eigenvalues"]["re"], entry["eigenvalues"]["im"], s=10, alpha=0.6, label=name)
    if continuous:
        right.axvline(0.0, color="k", lw=1, ls="--")
    else:
        circle = torch.linspace(0, 2 * math.pi, 200)
        right.plot(torch.cos(circle), torch.sin(circle), "k--", lw=1)
        right.set_aspect("equal", adjustable="datalim")
    right.set_xlabel("Re(λ)")
    right.set_ylabel("Im(λ)")
    right.set_title(f"eigenvalues, first probe input, training step {spectra[-1]['step']}")
    right.legend(fontsize=8)
    right.grid(alpha=0.3)
    return save_figure(fig, path)


def plot_gradient_flow(flows: list[dict], path: Path) -> Path:
    """||dL/d state_t|| against t, for the first, middle and last measurements."""
    fig, ax = plt.subplots(figsize=(7, 4.5), constrained_layout=True)
    picks = sorted({0, len(flows) // 2, len(flows) - 1})
    for index in picks:
        norms = flows[index]["grad_norm_by_time"]
        ax.plot(range(1, len(norms) + 1), norms, label=f"training step {flows[index]['step']}")
    ax.set_yscale("log")
    ax.set_xlabel("time step t of the input sequence")
    ax.set_ylabel("||∂L/∂state_t|| (mean over probe inputs)")
    ax.set_title("gradient flow through time (no clipping)")
    ax.legend()
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def plot_trajectories(states: torch.Tensor, units: int, path: Path) -> Path:
    """Every principal unit's state over time for one input (paper Fig. 7: y of all units)."""
    fig, ax = plt.subplots(figsize=(8, 4.5), constrained_layout=True)
    ax.plot(states[:, :units].numpy(), lw=0.8, alpha=0.7)
    ax.set_xlabel("time step")
    ax.set_ylabel("principal-unit state (ORGaNICs: y; RNNs: h)")
    ax.set_title(f"trajectories of all {units} units for one test input")
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def plot_steady_state_histogram(spectra: dict, path: Path) -> Path:
    """Histogram over test inputs of max Re(λ) at each layer's steady state (paper Fig. 5)."""
    fig, ax = plt.subplots(figsize=(7, 4.5), constrained_layout=True)
    for index, layer in enumerate(spectra["layers"]):
        ax.hist(layer["per_input"], bins=40, alpha=0.6, label=f"layer {index + 1} ({layer['units']} units)")
    ax.axvline(0.0, color="k", lw=1, ls="--", label="stability boundary")
    ax.set_xlabel(f"max Re(λ) of the Jacobian at the steady state (1/ms; time unit {spectra['time_unit_ms']:g} ms)")
    ax.set_ylabel("test inputs")
    ax.set_title(
        f"trained model: all {sum(len(layer['per_input']) for layer in spectra['layers'])} layer-input pairs "
        f"{'stable' if spectra['stable'] else 'NOT all stable'}"
    )
    ax.legend()
    ax.grid(alpha=0.3)
    return save_figure(fig, path)
