"""Stability diagnostics of sequence models, written once against `DynamicalModel` and `HasVectorField`
(models/base.py).

- Jacobian spectra along the trajectory of a probe input: of the continuous-time vector field where the model has
  one (`HasVectorField`: ORGaNICs, SSN: stable iff every Re(lambda) < 0), else of the discrete step map (LSTM, GRU,
  RNN: stable iff every |lambda| < 1).
- Gradient flow through time: ||dL/d state_t|| for every step t, which shows vanishing or exploding gradients.
- Trajectories: every unit's state over time for one probe input.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.func import jacrev, vmap

from organics_bench.models.base import DynamicalModel, HasVectorField


def state_jacobians(model: DynamicalModel, states: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """Jacobians (batch, d, d) of the vector field (or the step map) w.r.t. the state, one per (state, input) row."""
    field = model.vector_field if isinstance(model, HasVectorField) else lambda state, x: model.step(x, state)

    def single(state: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return field(state[None], x[None])[0]

    def jacobian(state: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return jacrev(lambda s: single(s, x))(state)

    return vmap(jacobian)(states, inputs)


@torch.no_grad()
def trajectory(model: DynamicalModel, x: torch.Tensor) -> torch.Tensor:
    """States (time + 1, batch, state_size) from the initial state through every `step`."""
    states = [model.initial_state(x.shape[0])]
    for t in range(x.shape[1]):
        states.append(model.step(x[:, t], states[-1]))
    return torch.stack(states)


def probe_spectra(model: DynamicalModel, x: torch.Tensor, fractions: list[float]) -> dict:
    """Eigenvalues of the state Jacobian at the given fractions of the sequence, for every probe input.

    Returns per time: the summary statistic of each probe input (max Re(lambda) for continuous-time models, the
    spectral radius for discrete maps) and all eigenvalues of the first probe input; non-finite values are counted
    and left out.
    """
    continuous = isinstance(model, HasVectorField)
    states = trajectory(model, x)
    steps = x.shape[1]
    result = {
        "kind": "continuous" if continuous else "discrete",
        "statistic": "max_real" if continuous else "spectral_radius",
        "times": [],
    }
    for fraction in fractions:
        t = min(steps - 1, max(0, round(fraction * steps) - 1))
        with torch.no_grad():
            jac = state_jacobians(model, states[t].detach(), x[:, t]).double().cpu()
        finite_rows = torch.isfinite(jac).flatten(1).all(1)
        eig = torch.linalg.eigvals(jac[finite_rows]) if finite_rows.any() else torch.empty(0, jac.shape[-1])
        per_input = eig.real.max(-1).values if continuous else eig.abs().max(-1).values
        first = eig[0] if len(eig) else torch.empty(0, dtype=torch.complex128)
        result["times"].append(
            {
                "step": t + 1,
                "fraction": fraction,
                "per_input": per_input.tolist(),
                "worst": per_input.max().item() if len(per_input) else math.nan,
                "nonfinite_inputs": int((~finite_rows).sum()),
                "eigenvalues": {"re": first.real.tolist(), "im": first.imag.tolist()},
            }
        )
    values = [entry["worst"] for entry in result["times"] if math.isfinite(entry["worst"])]
    result["worst"] = max(values) if values else math.nan
    result["stable"] = bool(values) and (result["worst"] < 0 if continuous else result["worst"] < 1)
    return result


def gradient_flow(
    model: DynamicalModel,
    x: torch.Tensor,
    y: torch.Tensor,
    criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
) -> list[float]:
    """Mean over the probe batch of ||dL/d state_t|| for t = 1..T (L: the task's `criterion`, cross-entropy unless
    it says otherwise, of the final readout)."""
    state = model.initial_state(x.shape[0])
    states = []
    for t in range(x.shape[1]):
        state = model.step(x[:, t], state)
        states.append(state)
    loss = criterion(model.readout(state), y)
    grads = torch.autograd.grad(loss, states, allow_unused=True)
    return [0.0 if g is None else g.norm(dim=-1).mean().item() for g in grads]
