"""Contrast (the paper's abstract; docs/protocols.md, 'Stabilized supralinear networks'): random E/I SSNs lose
stability as the input grows, while random ORGaNICs (W_r = I) stay stable at every input strength."""

from __future__ import annotations

import dataclasses
import pathlib
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from organics_bench.theory import experiment
from organics_bench.theory.circuit import eigvals, fixed_point_identity, jacobian, max_real_eig, sample_unit
from organics_bench.theory.settings import SSNContrastSettings
from organics_bench.theory.ssn import sample_ssn, simulate_ssn, ssn_jacobian

NAME = "ssn_contrast"
CLAIM = (
    "SSN stability depends on parameters and input strength (φ' grows with activity), unlike ORGaNICs with "
    "W_r = I, which is stable for every input (docs/equations.md, 'Jacobian at the fixed point'; "
    "docs/protocols.md, 'Stabilized supralinear networks')"
)


def ssn_outcomes(
    W: Tensor, tau: Tensor, inputs: Sequence[float], dt: float, t_max: float, k: float, n: float
) -> dict[str, Any]:
    """Simulate every circuit at every input h (h_i = h for all neurons) in one batch; count outcomes per h."""
    B, N = W.shape[:2]
    h = torch.tensor(list(inputs), dtype=W.dtype).repeat_interleave(B)[:, None].expand(-1, N)
    Wb, taub = W.repeat(len(inputs), 1, 1), tau.repeat(len(inputs), 1)
    out = simulate_ssn(Wb, h, taub, dt, int(round(t_max / dt)), k, n)
    lam = torch.full((len(h),), float("nan"), dtype=W.dtype)
    ok = out.converged
    lam[ok] = max_real_eig(ssn_jacobian(out.r[ok], Wb[ok], h[ok], taub[ok], k, n))
    shape = (len(inputs), B)
    stable = (ok & (lam < 0)).reshape(shape)
    div = out.diverged.reshape(shape)
    return {
        "fraction_stable": stable.double().mean(-1),
        "fraction_diverged": div.double().mean(-1),
        "fraction_not_converged": (~ok.reshape(shape) & ~div).double().mean(-1),
        "fraction_converged_unstable": (ok.reshape(shape) & ~stable).double().mean(-1),
        "mean_rate_stable_hz": torch.stack([out.r.reshape(*shape, N)[i][stable[i]].mean() for i in range(len(inputs))]),
        "max_real_lambda_times_tau_e": (lam * float(tau.min())).reshape(shape),
        "steps": out.steps,
    }


def organics_margins(n_circuits: int, n: int, inputs: Sequence[float], gen: torch.Generator) -> Tensor:
    """max Re λ·τ (inputs × circuits) of random W_r = I ORGaNICs (Fig. 4 sampler) with ||z|| = h."""
    rows = []
    for h in inputs:
        c = sample_unit(n_circuits, n, gen, wr_bound=None)
        c = dataclasses.replace(c, z=c.z * h)
        y, a = fixed_point_identity(c)
        rows.append(eigvals(jacobian(c, y, a)).real.amax(-1) * float(c.tau_y.min()))
    return torch.stack(rows)


@experiment.single_threaded
def run(out_dir: pathlib.Path, smoke: bool = False, seed: int = 0, **overrides: Any) -> dict[str, Any]:
    """Fraction of stable SSNs and ORGaNICs vs input strength, with the defaults of :class:`SSNContrastSettings` and
    ``overrides`` of them (its smoke sizes if ``smoke``); write ssn_contrast.{json,png}; return the summary."""
    started = time.perf_counter()
    settings = SSNContrastSettings.build(overrides, smoke)
    n_e, n_i, inputs = settings.n_e, settings.n_i, settings.inputs
    gen = experiment.seeded(seed)
    W = sample_ssn(settings.n_circuits, n_e, n_i, gen, settings.spread)
    tau = torch.cat([torch.full((n_e,), settings.tau_e_ms), torch.full((n_i,), settings.tau_i_ms)]).to(W.dtype)
    ssn = ssn_outcomes(
        W, tau.expand(settings.n_circuits, -1), inputs, settings.dt_ms, settings.t_max_ms, settings.k, settings.power
    )
    org = organics_margins(settings.n_circuits, n_e + n_i, inputs, gen)
    org_frac = (org < 0).double().mean(-1)
    summary = {
        "claim": CLAIM,
        "spec": "docs/equations.md, 'Jacobian at the fixed point' (ORGaNICs); "
        "docs/protocols.md, 'Stabilized supralinear networks' (SSN)",
        "params": dataclasses.asdict(settings),
        "smoke": smoke,
        "seed": seed,
        "headline": {
            "ssn_fraction_stable_by_input": dict(zip(map(str, inputs), ssn["fraction_stable"].tolist())),
            "organics_fraction_stable_by_input": dict(zip(map(str, inputs), org_frac.tolist())),
        },
        "claim_holds": bool(org_frac.min() == 1.0 and ssn["fraction_stable"][-1] < ssn["fraction_stable"][0]),
        "ssn": {key: v for key, v in ssn.items() if key != "max_real_lambda_times_tau_e"},
        "organics_worst_margin_by_input": org.amax(-1),
        "protocol": f"SSN: {n_e} E + {n_i} I neurons, Dale's law, J_ab = Ahmadian-2013 values x "
        f"10^U(±{settings.spread}), W_ij = ±J_ab U(0.5, 1.5)/N_b, k = {settings.k}, n = {settings.power}, "
        f"τ_E = {settings.tau_e_ms} ms, τ_I = {settings.tau_i_ms} ms, uniform input h; Euler dt = "
        f"{settings.dt_ms} ms from r = 0 for up to {settings.t_max_ms} ms; stable = converged "
        "and max Re λ(J) < 0; diverged = a rate above 1e4 Hz. ORGaNICs: Fig. 4 sampler with W_r = I and "
        "z scaled to ||z|| = h, closed-form fixed point.",
    }
    return experiment.save(out_dir, NAME, summary, _plot(ssn, org, inputs, W[0], n_e), started)


def _plot(ssn: dict[str, Any], org: Tensor, inputs: Sequence[float], W0: Tensor, n_e: int):
    fig, ax = experiment.figure(1, 3, width=5.2, height=4.3)
    x = np.array(inputs)
    ax[0, 0].plot(x, 100 * ssn["fraction_stable"].numpy(), "o-", color="C3", label="SSN: stable fixed point")
    ax[0, 0].plot(x, 100 * ssn["fraction_diverged"].numpy(), "s--", color="C3", alpha=0.6, label="SSN: runaway")
    ax[0, 0].plot(
        x,
        100 * ssn["fraction_not_converged"].numpy(),
        "^:",
        color="C3",
        alpha=0.6,
        label="SSN: not converged (oscillating)",
    )
    ax[0, 0].plot(x, 100 * (org < 0).double().mean(-1).numpy(), "o-", color="C0", label="ORGaNICs (W_r = I): stable")
    ax[0, 0].set(
        xscale="log",
        xlabel="input strength h (SSN drive; ORGaNICs ||z||)",
        ylabel="random circuits (%)",
        title=f"Stability vs input strength ({org.shape[1]} random circuits per point)",
    )
    ax[0, 0].legend(fontsize=8)
    lam = ssn["max_real_lambda_times_tau_e"].numpy()
    for i, h in enumerate(x):
        ok = np.isfinite(lam[i])
        ax[0, 1].scatter(
            np.full(ok.sum(), h) * np.exp(np.random.default_rng(i).uniform(-0.08, 0.08, ok.sum())),
            lam[i][ok],
            s=6,
            color="C3",
            alpha=0.4,
            label="SSN (converged circuits)" if i == 0 else None,
        )
        ax[0, 1].scatter(
            np.full(org.shape[1], h) * 1.25,
            org[i].numpy(),
            s=6,
            color="C0",
            alpha=0.4,
            label="ORGaNICs" if i == 0 else None,
        )
    ax[0, 1].axhline(0, color="k", lw=0.8)
    ax[0, 1].set(
        xscale="log",
        xlabel="input strength h",
        ylabel="max Re λ(J) · min τ (dimensionless)",
        title="Stability margin at the fixed point\n(SSN τ_min = τ_I; ORGaNICs τ = 2 ms)",
    )
    ax[0, 1].legend(fontsize=8)
    lim = float(W0.abs().max())
    im = ax[0, 2].imshow(W0.numpy(), cmap="RdBu_r", vmin=-lim, vmax=lim)
    ax[0, 2].axvline(n_e - 0.5, color="k", lw=0.8)
    ax[0, 2].axhline(n_e - 0.5, color="k", lw=0.8)
    fig.colorbar(im, ax=ax[0, 2], label="weight W_ij")
    ax[0, 2].set(
        xlabel="presynaptic neuron j (E | I)",
        ylabel="postsynaptic neuron i (E | I)",
        title="Example SSN weights (Dale's law:\nE columns >= 0, I columns <= 0)",
    )
    return fig
