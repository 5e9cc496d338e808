"""Spectra at the steady state of static fixed-point models (paper Figs. 5 and 6).

For every layer and input: the Jacobian of the continuous-time main ORGaNICs ODE (tau_y = tau_a = `tau`, the
paper's 2 ms) at the layer's fixed point, by autograd; its max Re(lambda) < 0 means the point is stable.
"""
from __future__ import annotations

import math

import torch
from torch.func import jacrev, vmap


def has_steady_state_layers(model: torch.nn.Module) -> bool:
    return hasattr(model, "layer_steady_states")


@torch.no_grad()
def steady_state_spectra(model: torch.nn.Module, x: torch.Tensor, tau: float = 2.0) -> dict:
    """Per layer: max Re(lambda) per input (units 1/ms with tau in ms), the worst, and the residuals."""
    layers = []
    for layer, found in zip(model.layers, model.layer_steady_states(x)):
        def field(state: torch.Tensor, drive: torch.Tensor, layer=layer) -> torch.Tensor:
            return layer.vector_field(state[None], drive[None])[0] / tau

        jac = vmap(jacrev(field))(found.state, found.drive).double().cpu()
        finite = torch.isfinite(jac).flatten(1).all(1)
        eig = torch.linalg.eigvals(jac[finite])
        per_input = eig.real.max(-1).values
        layers.append({
            "units": layer.n_units,
            "per_input": per_input.tolist(),
            "worst": per_input.max().item() if len(per_input) else math.nan,
            "nonfinite_inputs": int((~finite).sum()),
            "max_residual": found.residual.max().item(),
            "eigenvalues": {"re": eig[0].real.tolist(), "im": eig[0].imag.tolist()} if len(eig) else {},
        })
    values = [layer["worst"] for layer in layers if math.isfinite(layer["worst"])]
    worst = max(values) if values else math.nan
    return {"kind": "steady_state", "statistic": "max_real", "tau_ms": tau, "layers": layers, "worst": worst,
            "stable": bool(values) and worst < 0}
