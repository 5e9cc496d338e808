"""Generic W_r (Conjecture 5.3; docs/equations.md, 'Generic W_r conjecture'): fraction of random circuits that reach
a stable fixed point vs the bound s on σ_max(W_r) and vs circuit size."""

from __future__ import annotations

import dataclasses
import itertools
import pathlib
import time
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from organics_bench.theory import experiment
from organics_bench.theory.circuit import (
    Circuit,
    jacobian,
    max_real_eig,
    newton_polish,
    residual,
    sample_unit,
    simulate,
)
from organics_bench.theory.settings import WrSweepSettings

NAME = "wr_sweep"
CLAIM = (
    "With ||z|| = 1 and σ_max(W_r) <= 1 every random circuit reaches a stable fixed point; still 100% at "
    "σ_max = 2, breaks down at 3 (project site; docs/equations.md, 'Generic W_r conjecture')"
)
OUTCOMES = (
    ("stable", "C2", "converged, stable"),
    ("slow", "C8", "not converged in T; stable fixed point"),
    ("oscillating", "C1", "not converged; unstable fixed point (oscillates)"),
    ("unknown", "C0", "not converged; no fixed point found"),
    ("diverged", "C3", "diverged"),
    ("converged_unstable", "k", "converged, unstable"),
)


def _outcome(cell: dict[str, Any], key: str) -> int:
    d = cell["not_converged_diagnosis"]
    return {
        "slow": d["found_and_stable"],
        "oscillating": d["found_and_unstable"],
        "unknown": cell["not_converged"] - d["found_and_stable"] - d["found_and_unstable"],
    }.get(key, cell.get(key))


def classify(
    n_trials: int, n: int, bound: float, gen: torch.Generator, dt_frac: float, t_frac: float, init: float, tol: float
) -> dict[str, Any]:
    """Simulate ``n_trials`` circuits of the conjecture's protocol (Euler, dt = dt_frac·τ, T = t_frac·τ,
    y = a = init) and count outcomes; stable = residual < tol at the end and max Re λ(J) < 0 there."""
    c = sample_unit(n_trials, n, gen, wr_bound=bound)
    tau = float(c.tau_y.min())
    traj = simulate(
        c, torch.full_like(c.z, init), torch.full_like(c.z, init), dt_frac * tau, int(round(t_frac / dt_frac)), tol=tol
    )
    lam = torch.full((n_trials,), float("nan"), dtype=c.z.dtype)
    ok = traj.converged
    if ok.any():
        lam[ok] = max_real_eig(jacobian(c.select(ok), traj.y[ok], traj.a[ok]))
    stable = ok & (lam < 0)
    stuck = ~ok & ~traj.diverged
    diag = _diagnose(c.select(stuck), traj.y[stuck], traj.a[stuck])
    counts = {
        "stable": int(stable.sum()),
        "converged_unstable": int((ok & ~stable).sum()),
        "not_converged": int(stuck.sum()),
        "diverged": int(traj.diverged.sum()),
    }
    slow = diag["found_and_stable"]
    return {
        "n": n,
        "bound": bound,
        "trials": n_trials,
        **counts,
        "fraction_stable": counts["stable"] / n_trials,
        "fraction_stable_incl_slow": (counts["stable"] + slow) / n_trials,
        "not_converged_diagnosis": diag,
        "max_real_lambda_times_tau": (lam * tau)[ok],
        "euler_steps": traj.steps,
    }


def _diagnose(c: Circuit, y: Tensor, a: Tensor) -> dict[str, Any]:
    """For circuits that kept moving: Newton from the last state; a fixed point found there with max Re λ > 0 means
    the trajectory circles an unstable fixed point (sustained oscillation), not slow convergence."""
    if len(y) == 0:
        return {
            "fixed_point_found_by_newton": 0,
            "found_and_unstable": 0,
            "found_and_stable": 0,
            "max_real_lambda_per_ms": [],
        }
    yf, af = newton_polish(c, y, a, n_iter=50)
    found = (residual(c, yf, af) < 1e-10) & (af > 0).all(-1)
    lam = torch.full((len(y),), float("nan"), dtype=y.dtype)
    if found.any():
        lam[found] = max_real_eig(jacobian(c.select(found), yf[found], af[found]))
    return {
        "fixed_point_found_by_newton": int(found.sum()),
        "found_and_unstable": int((lam > 0).sum()),
        "found_and_stable": int((lam < 0).sum()),
        "max_real_lambda_per_ms": lam,
    }


@experiment.single_threaded
def run(out_dir: pathlib.Path, smoke: bool = False, seed: int = 0, **overrides: Any) -> dict[str, Any]:
    """Sweep (bound, size) with the defaults of :class:`WrSweepSettings` and ``overrides`` of them (its smoke sizes
    if ``smoke``); write wr_sweep.{json,png} to ``out_dir``; return the summary."""
    started = time.perf_counter()
    settings = WrSweepSettings.build(overrides, smoke)
    gen = experiment.seeded(seed)
    cells = [
        classify(settings.n_trials, n, float(s), gen, settings.dt_frac, settings.t_frac, settings.init, settings.tol)
        for s, n in tqdm(list(itertools.product(settings.bounds, settings.sizes)), desc=NAME, disable=smoke)
    ]
    by_bound = {str(s): min(r["fraction_stable"] for r in cells if r["bound"] == s) for s in settings.bounds}
    table = [{k: v for k, v in r.items() if k != "max_real_lambda_times_tau"} for r in cells]
    summary = {
        "claim": CLAIM,
        "spec": "docs/equations.md, 'Generic W_r conjecture'",
        "params": dataclasses.asdict(settings),
        "smoke": smoke,
        "seed": seed,
        "headline": {
            "min_fraction_stable_by_bound": by_bound,
            "fraction_stable": {f"s={r['bound']:g},N={r['n']}": r["fraction_stable"] for r in cells},
            "fraction_stable_incl_slow": {
                f"s={r['bound']:g},N={r['n']}": r["fraction_stable_incl_slow"] for r in cells
            },
        },
        "claim_holds": all(by_bound[str(s)] == 1.0 for s in settings.bounds if s <= 1.0),
        "claim_holds_at_bound_2": all(by_bound[str(s)] == 1.0 for s in settings.bounds if s <= 2.0),
        "cells": table,
        "protocol": "b, b0, σ ~ U(0,1)^N; τ_y = τ_a = 2 ms; W ~ U(0,1)^{N×N}; W_r = s·G/σ_max(G), G ~ N(0,1); "
        f"z = g/||g||; Euler dt = {settings.dt_frac:g} τ, T = {settings.t_frac:g} τ from y = a = "
        f"{settings.init:g}; converged = relative ODE residual < {settings.tol:g}; stable = converged and "
        "max Re λ(J) < 0 (main model, J with W_r). not_converged_diagnosis: Newton from the last state "
        "finds the fixed point the trajectory approaches or circles: max Re λ < 0 there means slow "
        "convergence (counted in fraction_stable_incl_slow), > 0 a sustained oscillation around an "
        "unstable fixed point.",
    }
    return experiment.save(out_dir, NAME, summary, _plot(cells, settings), started)


def _plot(cells: list[dict[str, Any]], settings: WrSweepSettings):
    fig, ax = experiment.figure(1, 3, width=5.2, height=4.3)
    for i, n in enumerate(settings.sizes):
        rows = [r for r in cells if r["n"] == n]
        f = np.array([r["fraction_stable"] for r in rows])
        se = np.sqrt(np.maximum(f * (1 - f), 0.25 / rows[0]["trials"]) / rows[0]["trials"])
        ax[0, 0].errorbar(
            [r["bound"] for r in rows],
            100 * f,
            yerr=100 * se,
            marker="o",
            capsize=3,
            color=f"C{i}",
            label=f"N = {n} ({rows[0]['trials']} circuits each)",
        )
        ax[0, 0].plot(
            [r["bound"] for r in rows], [100 * r["fraction_stable_incl_slow"] for r in rows], ":", color=f"C{i}"
        )
    ax[0, 0].plot([], [], "k:", label="dotted: counting slow convergers as stable")
    ax[0, 0].set(
        xticks=list(settings.bounds),
        xlabel="bound s on the largest singular value of W_r",
        ylabel="circuits reaching a stable fixed point (%)",
        title="Stability vs σ_max(W_r) (||z|| = 1)\nclaim: 100% at s = 1 and 2, breaks at 3",
    )
    ax[0, 0].legend()
    labels = [f"s={r['bound']:g}\nN={r['n']}" for r in cells]
    bottom = np.zeros(len(cells))
    for key, color, label in OUTCOMES:
        vals = np.array([_outcome(r, key) for r in cells])
        ax[0, 1].bar(np.arange(len(cells)), vals, bottom=bottom, color=color, label=label)
        bottom += vals
    ax[0, 1].set_ylim(0.8 * cells[0]["trials"], 1.02 * cells[0]["trials"])
    ax[0, 1].set_xticks(np.arange(len(cells)), labels, fontsize=7)
    ax[0, 1].set(
        ylabel="number of circuits (axis starts at 80%)",
        title=f"Outcome of each simulation (Euler, T = {settings.t_frac:g} τ)",
    )
    ax[0, 1].legend(fontsize=7.5, loc="lower left", framealpha=0.95)
    for i, s in enumerate(settings.bounds):
        lam = torch.cat([r["max_real_lambda_times_tau"] for r in cells if r["bound"] == s]).numpy()
        if len(lam):
            ax[0, 2].hist(
                lam, bins=40, histtype="step", lw=1.5, color=f"C{i}", label=f"s = {s:g} ({len(lam)} converged)"
            )
    ax[0, 2].axvline(0, color="k", lw=0.8)
    ax[0, 2].set(
        xlabel="max Re λ(J) · τ at the reached fixed point (dimensionless)",
        ylabel="number of circuits",
        title="Linear stability of the reached fixed points\n(all sizes pooled; < 0 means stable)",
    )
    ax[0, 2].legend(fontsize=8)
    return fig
