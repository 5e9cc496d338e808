"""Spectra at the steady states of static models (paper Figs. 5 and 6), written once against `HasSteadyState`
(models/base.py).

For every layer and input: the Jacobian, by autograd, of the layer's continuous-time vector field at the fixed point
the forward computed, in 1/ms (ORGaNICs: the main model with tau_y = tau_a = 2 ms, as the paper; static SSN: the E-I
network at dt = 2 ms); its max Re(lambda) < 0 means the point is stable.
"""

from __future__ import annotations

import math

import torch
from torch.func import jacrev, vmap

from organics_bench.models.base import HasSteadyState, LayerSteadyState


@torch.no_grad()
def steady_state_spectra(model: HasSteadyState, x: torch.Tensor) -> dict:
    """Per layer: max Re(lambda) per input (1/ms), the worst, the eigenvalues of the first input and the residuals."""
    layers = []
    for found in model.layer_steady_states(x):
        jac = _jacobians(found, model.time_unit_ms).double().cpu()
        finite = torch.isfinite(jac).flatten(1).all(1)
        eig = torch.linalg.eigvals(jac[finite])
        per_input = eig.real.max(-1).values
        layers.append(
            {
                "units": found.units,
                "per_input": per_input.tolist(),
                "worst": per_input.max().item() if len(per_input) else math.nan,
                "nonfinite_inputs": int((~finite).sum()),
                "max_residual": found.residual.max().item(),
                "eigenvalues": {"re": eig[0].real.tolist(), "im": eig[0].imag.tolist()} if len(eig) else {},
            }
        )
    values = [layer["worst"] for layer in layers if math.isfinite(layer["worst"])]
    worst = max(values) if values else math.nan
    return {
        "kind": "steady_state",
        "statistic": "max_real",
        "time_unit_ms": model.time_unit_ms,
        "layers": layers,
        "worst": worst,
        "stable": bool(values) and worst < 0,
    }


def _jacobians(found: LayerSteadyState, time_unit_ms: float) -> torch.Tensor:
    """d(d state/dt)/d state (batch, d, d) in 1/ms at each input's steady state."""

    def field(state: torch.Tensor, drive: torch.Tensor) -> torch.Tensor:
        return found.vector_field(state[None], drive[None])[0] / time_unit_ms

    return vmap(jacrev(field))(found.state, found.drive)
