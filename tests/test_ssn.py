"""SSN baselines: the Euler step against the equations, Dale's law, gradients, settling, divergence, shapes."""

import pytest
import torch
import torch.nn.functional as F

from organics_bench.models.base import DynamicalModel, count_trainable
from organics_bench.models.ssn import SSN, SSNStatic


def spec_step(u, x, raw, W_in, bias, n_e, k, dt_tau_e, dt_tau_i):
    """tau du/dt = -u + W k[u]+^2 + W_in x + bias, Dale's law W = +softplus (E columns) / -softplus (I columns)."""
    W = torch.cat([F.softplus(raw[:, :n_e]), -F.softplus(raw[:, n_e:])], 1)
    dt_tau = torch.tensor([dt_tau_e] * n_e + [dt_tau_i] * (raw.shape[0] - n_e), dtype=u.dtype)
    return u + dt_tau * (-u + (k * F.relu(u) ** 2) @ W.T + x @ W_in.T + bias)


def perturbed(model):
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model


def strongly_excitatory(model):
    """Make E->all synapses about 20 times stronger."""
    circuit = model.circuit
    with torch.no_grad():
        circuit.raw_weights[:, : circuit.n_excitatory] += 3.0
    return model


def test_step_is_a_hand_written_euler_step():
    torch.manual_seed(0)
    m = perturbed(SSN(3, 10, n_excitatory=6, n_inhibitory=4, k=0.05, dt_tau_e=0.03, dt_tau_i=0.07).double())
    u, x = 10 * torch.randn(5, 10, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    expected = spec_step(u, x, m.circuit.raw_weights, m.circuit.input.weight, m.circuit.input.bias, 6, 0.05, 0.03, 0.07)
    got = m.step(x, u)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(m.vector_field(u, x), got - u)
    assert (got - u).abs().max() > 1e-2


def test_sequence_path_matches_per_step_loop():
    torch.manual_seed(1)
    m = SSN(2, 10, n_excitatory=8, n_inhibitory=8)
    x = torch.rand(3, 40, 2)
    torch.testing.assert_close(m.run_steps(x), DynamicalModel.run_steps(m, x))
    assert m(x).shape == (3, 10) and m.initial_state(3).shape == (3, 16)


def test_parameter_counts():
    assert count_trainable(SSNStatic(784, 10, 50, 50)) == 662_264 + 40 * 100 + 100 + 100 * 100 + 510
    assert count_trainable(SSNStatic(784, 10, 80, 20)) == 662_264 + 40 * 100 + 100 + 100 * 100 + 810
    assert count_trainable(SSN(1, 10)) == 256 + 256 + 256 * 256 + 1_290


@pytest.mark.parametrize("build", [lambda: SSN(3, 10, 6, 4), lambda: SSNStatic(784, 10, 6, 4, steps=5)])
def test_dale_law_survives_training(build):
    torch.manual_seed(2)
    m = build()
    before = m.circuit.weights().detach().clone()
    optimizer = torch.optim.SGD(m.parameters(), lr=10.0)
    for _ in range(5):
        for p in m.parameters():
            p.grad = 10 * torch.randn_like(p)
        optimizer.step()
    W = m.circuit.weights()
    assert (W[:, :6] >= 0).all() and (W[:, 6:] <= 0).all()
    assert (W - before).abs().max() > 1.0  # the weights really moved
    torch.testing.assert_close(m.recurrent_matrix(), W)


@pytest.mark.parametrize("static", [False, True])
def test_gradients_reach_every_parameter(static):
    torch.manual_seed(3)
    if static:
        m, x = SSNStatic(784, 10, 6, 4, steps=30), torch.rand(4, 1, 28, 28)
    else:
        m, x = SSN(2, 10, 6, 4), torch.rand(4, 30, 2)
    loss, logits = m.loss(x, torch.randint(0, 10, (4,)))
    assert logits.shape == (4, 10)
    loss.backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_static_steady_state_of_a_weakly_driven_net_is_a_fixed_point():
    torch.manual_seed(4)
    m = SSNStatic(784, 10, 20, 20, steps=400, input_scale=2.0).double()
    images = torch.rand(8, 1, 28, 28, dtype=torch.float64)
    (found,) = m.layer_steady_states(images)
    u, residual = found.state, found.residual
    assert u.shape == (8, 40) and residual.shape == (8,) and found.units == 40
    assert residual.max() < 1e-6
    assert m.circuit.excitatory_firing_rate(u).max() > 0.01  # settled with neurons active, not at rest
    torch.testing.assert_close(m.rate_readout(u), m(images))  # the state the forward reads out
    torch.testing.assert_close(found.vector_field(u, found.drive), m.circuit.step(u, found.drive) - u)
    m.steps = 20
    assert m.layer_steady_states(images)[0].residual.min() > 1e-3  # the residual tells an unsettled state apart


def test_static_model_takes_images_and_vectors():
    torch.manual_seed(5)
    m = SSNStatic(784, 10, 8, 8, steps=20)
    images = torch.rand(3, 1, 28, 28)
    logits = m(images)
    assert logits.shape == (3, 10) and m.kind == "static"
    torch.testing.assert_close(m(images.reshape(3, 784)), logits)


def test_a_strongly_excitatory_ssn_diverges_and_nothing_hides_it():
    torch.manual_seed(6)
    static, images = SSNStatic(784, 10, 8, 8, steps=200), torch.rand(4, 1, 28, 28)
    sequence, pixels = SSN(1, 10, 8, 8), torch.rand(4, 200, 1)
    assert torch.isfinite(static(images)).all() and torch.isfinite(sequence(pixels)).all()
    strongly_excitatory(static)
    strongly_excitatory(sequence)
    assert not torch.isfinite(static.layer_steady_states(images)[0].state).all()
    assert not torch.isfinite(static.loss(images, torch.zeros(4, dtype=torch.long))[0])
    assert not torch.isfinite(sequence.run_steps(pixels)).all()
