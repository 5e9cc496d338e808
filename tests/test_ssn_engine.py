"""The SSN sequence engine against the per-step `step` loop: forward, every gradient, constant drives, divergence."""
import pytest
import torch

from organics_bench.models.base import DynamicalModel
from organics_bench.models.ssn import SSN, SSNStatic


def assert_relative(got: torch.Tensor, expected: torch.Tensor, name: str, tol: float) -> None:
    torch.testing.assert_close(got, expected, rtol=tol, atol=tol * expected.abs().max().item(), msg=name)


def loss_and_grads(model, run):
    model.zero_grad()
    out = run()
    loss = out.square().mean() + out.sum()
    loss.backward()
    return out.detach(), {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
@pytest.mark.parametrize("power", [2.0, 1.0, 3.0])
def test_sequence_engine_matches_per_step_loop(dtype, tol, power):
    torch.manual_seed(0)
    m = SSN(3, 10, n_excitatory=12, n_inhibitory=8, power=power, dt_tau_e=0.1, dt_tau_i=0.2).to(dtype)
    with torch.no_grad():
        m.circuit.input.bias.zero_()  # drives of both signs: some voltages stay below zero, so [u]+ masks matter
    x = torch.randn(6, 60, 3, dtype=dtype)
    ref, grads_ref = loss_and_grads(m, lambda: m.readout(DynamicalModel.run_steps(m, x)))
    got, grads = loss_and_grads(m, lambda: m.readout(m.run_steps(x)))
    state = m.run_steps(x).detach()
    assert (state < 0).any() and (state > 0).any()
    assert_relative(got, ref, "logits", tol)
    assert grads.keys() == grads_ref.keys() == {k for k, _ in m.named_parameters()}
    for k, g in grads_ref.items():
        assert g.abs().max() > 0, k
        assert_relative(grads[k], g, k, tol)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_static_engine_matches_per_step_loop(dtype, tol):
    torch.manual_seed(1)
    m = SSNStatic(784, 10, n_excitatory=10, n_inhibitory=10, steps=50, code_size=8).to(dtype)
    images = torch.rand(4, 784, dtype=dtype)

    def loop():
        c = m.circuit
        u = torch.zeros(4, c.size, dtype=dtype)
        h, W = c.input(m.encode(images)), c.weights()
        for _ in range(m.steps):
            u = c.step(u, h, W)
        return m.rate_readout(u)

    ref, grads_ref = loss_and_grads(m, loop)
    got, grads = loss_and_grads(m, lambda: m.classify(m.encode(images)))
    assert_relative(got, ref, "logits", tol)
    assert grads.keys() == grads_ref.keys()
    for k, g in grads_ref.items():
        assert_relative(grads[k], g, k, tol)


def test_sequence_engine_without_grad_and_divergence():
    torch.manual_seed(2)
    m = SSN(2, 10, n_excitatory=6, n_inhibitory=6)
    x = torch.rand(3, 200, 2)
    with torch.no_grad():
        torch.testing.assert_close(m.run_steps(x), DynamicalModel.run_steps(m, x))
        m.circuit.raw_weights[:, :6] += 3.0  # runaway excitation
        assert not m.run_steps(x).isfinite().all()
        assert not DynamicalModel.run_steps(m, x).isfinite().all()
