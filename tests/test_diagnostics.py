"""Diagnostics: which models the contracts (models/base.py) classify as what, autograd Jacobians against finite
differences and closed forms, gradient flow, and the files a training run writes."""

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from organics_bench.diagnostics.dynamics import gradient_flow, probe_spectra, state_jacobians
from organics_bench.diagnostics.runner import Diagnostics
from organics_bench.diagnostics.steady_state import steady_state_spectra
from organics_bench.models.base import HasSteadyState, HasVectorField
from organics_bench.models.conv import CNN, ConvOrganics
from organics_bench.models.linear_readout import AutoencoderLinear
from organics_bench.models.organics import Organics
from organics_bench.models.organics_static import OrganicsStatic
from organics_bench.models.rnn import GRU, LSTM, TanhRNN
from organics_bench.models.ssn import SSN, SSNStatic
from organics_bench.models.stable_rnns import AntisymmetricRNN, CoRNN, LipschitzRNN
from tests.helpers import run_in_process, smoke_overrides

# model -> (has a continuous-time vector field, has steady states): what each contract should say of it
CONTRACTS = {
    lambda: Organics(2, 10, 4): (True, False),
    lambda: SSN(2, 10, 3, 3): (True, False),
    lambda: LipschitzRNN(2, 10, 4): (True, False),
    lambda: AntisymmetricRNN(2, 10, 4): (True, False),
    lambda: CoRNN(2, 10, 4): (False, False),  # an IMEX step, not state + field
    lambda: LSTM(2, 10, 4): (False, False),
    lambda: GRU(2, 10, 4): (False, False),
    lambda: TanhRNN(2, 10, 4): (False, False),
    lambda: OrganicsStatic(784, 10, [6, 4], "bounded"): (False, True),
    lambda: SSNStatic(784, 10, 3, 3): (False, True),
    lambda: ConvOrganics((1, 8, 8), 10, [2]): (False, False),  # closed form per position, no layer states
    lambda: CNN((1, 8, 8), 10, [2]): (False, False),
    lambda: AutoencoderLinear(784, 10): (False, False),
}


@pytest.mark.parametrize("make,expected", CONTRACTS.items())
def test_the_contracts_classify_every_model(make, expected):
    model = make()
    continuous, steady = expected
    assert (isinstance(model, HasVectorField), isinstance(model, HasSteadyState)) == expected
    assert Diagnostics.applies_to(model) == (model.kind == "sequence" or steady)
    if continuous:
        state, x = model.initial_state(3), torch.rand(3, 2)
        assert model.vector_field(state, x).shape == state.shape
    if steady:
        assert model.time_unit_ms == 2.0
        found = model.layer_steady_states(torch.rand(3, 784))
        assert [f.state.shape[0] for f in found] == [3] * len(found)
        for f in found:
            assert f.vector_field(f.state, f.drive).shape == f.state.shape and f.residual.shape == (3,)


def finite_difference_jacobian(fn, state: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    columns = []
    for i in range(state.numel()):
        step = torch.zeros_like(state)
        step[i] = eps
        columns.append((fn(state + step) - fn(state - step)) / (2 * eps))
    return torch.stack(columns, -1)


@pytest.mark.parametrize("make", [lambda: Organics(3, 10, 6), lambda: LSTM(3, 10, 6), lambda: SSN(3, 10, 4, 3)])
def test_autograd_jacobian_matches_finite_differences(make):
    torch.manual_seed(0)
    model = make().double()
    state = model.initial_state(2).clone() + 0.1 * torch.rand(2, model.initial_state(1).shape[-1]).double()
    x = torch.rand(2, 3, dtype=torch.float64)
    jac = state_jacobians(model, state, x)
    field = model.vector_field if isinstance(model, HasVectorField) else lambda s, x: model.step(x, s)
    for row in range(2):
        expected = finite_difference_jacobian(lambda s, row=row: field(s[None], x[row][None])[0], state[row])
        torch.testing.assert_close(jac[row], expected, atol=1e-7, rtol=1e-6)


def test_jacobian_at_the_normalization_fixed_point_is_the_papers_closed_form():
    """docs/equations.md, 'Jacobian at the fixed point' (W_r = I, rectified model, z > 0): the (y, a) block of the
    ORGaNICs Jacobian."""
    torch.manual_seed(1)
    n = 5
    model = Organics(n, 10, n, recurrence="identity").double()
    with torch.no_grad():
        model.W_zx.copy_(torch.eye(n))
    x = 0.2 + torch.rand(1, n, dtype=torch.float64)  # z = x > 0
    b, b0 = torch.rand(n, dtype=torch.float64) + 0.1, torch.rand(n, dtype=torch.float64) + 0.1
    W = model.normalization_matrix().detach()
    a_s = b0**2 + W @ (b * x[0]) ** 2
    y_s = b * x[0] / a_s.sqrt()
    state = torch.cat([y_s, a_s, b, b0])[None]
    assert model.vector_field(state, x)[0, : 2 * n].abs().max() < 1e-12  # a true fixed point of (y, a)
    rates = model.rates().detach()  # dt/tau
    inv_tau_y, inv_tau_a = torch.diag(rates[:n]), torch.diag(rates[n : 2 * n])
    closed = torch.cat(
        [
            torch.cat([-inv_tau_y @ torch.diag(a_s.sqrt()), -inv_tau_y @ torch.diag(y_s / (2 * a_s.sqrt()))], 1),
            torch.cat(
                [inv_tau_a @ (2 * W @ torch.diag(a_s * y_s)), inv_tau_a @ (-torch.eye(n) + W @ torch.diag(y_s**2))], 1
            ),
        ]
    )
    jac = state_jacobians(model, state, x)[0, : 2 * n, : 2 * n]
    torch.testing.assert_close(jac, closed, atol=1e-12, rtol=1e-10)
    eig = torch.linalg.eigvals(closed)
    assert eig.real.max() < 0  # the theorem: stable


def test_probe_spectra_report_each_time_and_the_right_statistic():
    torch.manual_seed(2)
    x = torch.rand(3, 12, 2)
    continuous = probe_spectra(Organics(2, 10, 4), x, [0.5, 1.0])
    assert continuous["statistic"] == "max_real" and [t["step"] for t in continuous["times"]] == [6, 12]
    assert len(continuous["times"][0]["per_input"]) == 3 and len(continuous["times"][0]["eigenvalues"]["re"]) == 16
    discrete = probe_spectra(LSTM(2, 10, 4), x, [1.0])
    assert discrete["statistic"] == "spectral_radius" and 0 < discrete["worst"] < 1  # a fresh LSTM contracts


def test_gradient_flow_is_the_norm_of_dloss_dstate_at_every_step():
    torch.manual_seed(3)
    model = Organics(2, 10, 4)
    x, y = torch.rand(2, 9, 2), torch.tensor([1, 3])
    norms = gradient_flow(model, x, y)
    assert len(norms) == 9 and all(n > 0 for n in norms)
    state = model.initial_state(2)
    for t in range(5):
        state = model.step(x[:, t], state)
    state = state.detach().requires_grad_(True)
    final = state
    for t in range(5, 9):
        final = model.step(x[:, t], final)
    loss = torch.nn.functional.cross_entropy(model.readout(final), y)
    (grad,) = torch.autograd.grad(loss, state)
    assert norms[4] == pytest.approx(grad.norm(dim=-1).mean().item(), rel=1e-5)


def test_static_model_steady_state_spectra_are_stable_at_init():
    torch.manual_seed(4)
    model = OrganicsStatic(784, 10, layers=[12, 6], recurrence="bounded", iterations=30)
    spectra = steady_state_spectra(model, torch.rand(8, 1, 28, 28))
    assert [layer["units"] for layer in spectra["layers"]] == [12, 6]
    assert spectra["stable"] and spectra["worst"] < 0
    assert all(layer["max_residual"] < 1e-4 for layer in spectra["layers"])


def test_static_ssn_steady_state_spectra_are_those_of_the_analytic_jacobian():
    """J = T^-1 (-I + W diag(k p [u]+^(p-1))) at the settled voltages, tau in units of dt = 2 ms."""
    torch.manual_seed(6)
    model = SSNStatic(784, 10, 8, 6, steps=400, input_scale=2.0).double()
    images = torch.rand(5, 1, 28, 28, dtype=torch.float64)
    spectra = steady_state_spectra(model, images)
    (found,) = model.layer_steady_states(images)
    c = model.circuit
    slope = c.k * c.power * F.relu(found.state) ** (c.power - 1)
    jac = c.dt_tau[:, None] * (-torch.eye(14, dtype=torch.float64) + c.weights().detach() * slope[:, None, :]) / 2.0
    eig = torch.linalg.eigvals(jac)
    (layer,) = spectra["layers"]
    assert layer["units"] == 14 and spectra["time_unit_ms"] == 2.0 and layer["nonfinite_inputs"] == 0
    torch.testing.assert_close(torch.tensor(layer["per_input"], dtype=torch.float64), eig.real.amax(-1))
    torch.testing.assert_close(
        torch.tensor(layer["eigenvalues"]["re"], dtype=torch.float64).sort().values, eig[0].real.sort().values
    )
    assert layer["max_residual"] < 1e-6 and spectra["stable"] and -0.1 < spectra["worst"] < 0


def smoke_run_with_spectra(tmp_path: Path, model: str, task: str) -> Path:
    """The run dir of a smoke run (2 steps); it must hold spectra from before training, after step 1 and at the end."""
    run_dir = tmp_path / "run"
    result = run_in_process(*smoke_overrides(model, task, tmp_path / "data"), f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (run_dir / "spectra").iterdir()) == [f"step_00000{k}.json" for k in range(3)]
    return run_dir


def test_static_ssn_run_gets_steady_state_spectra(tmp_path):
    run_dir = smoke_run_with_spectra(tmp_path, "ssn_static", "mnist")
    spectra = json.loads((run_dir / "spectra" / "step_000002.json").read_text())
    assert spectra["kind"] == "steady_state" and [layer["units"] for layer in spectra["layers"]] == [100]
    assert len(spectra["layers"][0]["per_input"]) == 2 and len(spectra["layers"][0]["eigenvalues"]["re"]) == 100
    final = json.loads((run_dir / "steady_state_spectra.json").read_text())
    assert len(final["layers"][0]["per_input"]) == 16 and isinstance(final["worst"], float)
    assert not (run_dir / "gradient_flow").exists()
    for figure in ("spectra", "steady_state_spectra"):
        assert (run_dir / "figures" / f"{figure}.png").stat().st_size > 10_000


def test_training_run_writes_spectra_gradient_flow_and_figures(tmp_path):
    run_dir = smoke_run_with_spectra(tmp_path, "organics", "smnist")
    spectra = json.loads((run_dir / "spectra" / "step_000002.json").read_text())
    assert spectra["kind"] == "continuous" and len(spectra["times"]) == 3
    flow = json.loads((run_dir / "gradient_flow" / "step_000002.json").read_text())
    assert len(flow["grad_norm_by_time"]) == 196  # 14 x 14 pixels
    for figure in ("spectra", "gradient_flow", "trajectories"):
        assert (run_dir / "figures" / f"{figure}.png").stat().st_size > 10_000
