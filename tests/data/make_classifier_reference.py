"""Writes classifier_reference.pt, the reference that tests/test_nn_layers.py holds the benchmark's classifiers to.

Run once, on one thread, on the code before `organics_bench.nn` existed (commit 498654f, where each classifier still
had its own copy of its cell): `.venv/bin/python tests/data/make_classifier_reference.py`. For every classifier of
CASES it stores, at seed 0, the state dict (parameters and buffers), the logits and the final state for a fixed
input, the gradient of every parameter under a cross-entropy loss, and the CPU it ran on (bit-identity is only
promised on the same CPU: the native engine is compiled for the machine's own instruction set).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from organics_bench.models import cpu_kernels
from organics_bench.models.organics import Organics
from organics_bench.models.ssn import SSN
from organics_bench.models.stable_rnns import AntisymmetricRNN, CoRNN, LipschitzRNN

D_INPUT, N_CLASSES, BATCH, STEPS = 3, 5, 4, 7
CASES = {
    "organics": (Organics, {"hidden_size": 8}),
    "organics_identity_rectified": (Organics, {"hidden_size": 8, "recurrence": "identity", "rectify_input": True}),
    "organics_unconstrained_fixed_tau": (
        Organics,
        {"hidden_size": 8, "recurrence": "unconstrained", "clamp_normalization": True, "learn_tau": False},
    ),
    "organics_stepped": (Organics, {"hidden_size": 8, "engine": "stepped"}),
    "organics_loop": (Organics, {"hidden_size": 8, "engine": "loop"}),
    "cornn": (CoRNN, {"hidden_size": 8}),
    "cornn_implicit": (CoRNN, {"hidden_size": 8, "damping": "implicit", "dt": 0.3}),
    "lipschitz_rnn": (LipschitzRNN, {"hidden_size": 8, "epsilon": 0.3}),
    "lipschitz_rnn_rk2": (LipschitzRNN, {"hidden_size": 8, "epsilon": 0.3, "scheme": "rk2"}),
    "antisymmetric_rnn": (AntisymmetricRNN, {"hidden_size": 8, "epsilon": 0.3}),
    "antisymmetric_rnn_gated": (AntisymmetricRNN, {"hidden_size": 8, "epsilon": 0.3, "gated": True}),
    "ssn": (SSN, {"n_excitatory": 6, "n_inhibitory": 4, "dt_tau_e": 0.2, "dt_tau_i": 0.4}),
}


def reference(cls: type, kwargs: dict) -> dict:
    """One classifier's numbers at seed 0 (the input and labels are drawn after the model)."""
    torch.manual_seed(0)
    model = cls(D_INPUT, N_CLASSES, **kwargs)
    x = torch.randn(BATCH, STEPS, D_INPUT)
    labels = torch.randint(N_CLASSES, (BATCH,))
    logits = model(x)
    F.cross_entropy(logits, labels).backward()
    with torch.no_grad():
        final_state = model.run_steps(x)
    return {
        "state_dict": {k: v.clone() for k, v in model.state_dict().items()},
        "x": x,
        "labels": labels,
        "logits": logits.detach(),
        "final_state": final_state,
        "grads": {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None},
    }


def main() -> None:
    torch.set_num_threads(1)
    data = {name: reference(cls, kwargs) for name, (cls, kwargs) in CASES.items()}
    data["cpu"] = cpu_kernels.cpu_description()
    torch.save(data, Path(__file__).with_name("classifier_reference.pt"))


if __name__ == "__main__":
    main()
