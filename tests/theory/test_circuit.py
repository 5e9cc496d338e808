"""The shared ORGaNICs equations: Jacobians, closed-form fixed point, simulation, samplers."""

import pytest
import torch

from organics_bench.theory.circuit import (
    DTYPE,
    fixed_point_identity,
    jacobian,
    jacobian_autograd,
    newton_polish,
    residual,
    sample_broad,
    sample_unit,
    simulate,
    vector_field,
)


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(0)


def _random_state(c, gen):
    y = torch.randn(c.z.shape, generator=gen, dtype=DTYPE)
    a = 0.1 + torch.rand(c.z.shape, generator=gen, dtype=DTYPE)
    return y, a


@pytest.mark.parametrize("rectified", [False, True])
@pytest.mark.parametrize("wr", [None, 1.5])
def test_analytic_jacobian_equals_jacrev(gen, rectified, wr):
    c = sample_unit(16, 7, gen, wr_bound=wr)
    y, a = _random_state(c, gen)
    J, J_auto = jacobian(c, y, a, rectified), jacobian_autograd(c, y, a, rectified)
    assert J.shape == (16, 14, 14)
    assert (J - J_auto).abs().max() <= 1e-8 * J.abs().max()


@pytest.mark.parametrize("rectified", [False, True])
def test_jacobian_matches_finite_differences(gen, rectified):
    c = sample_broad(4, 5, gen).with_wr(sample_unit(4, 5, gen, wr_bound=1.0).Wr)
    y, a = _random_state(c, gen)
    J = jacobian(c, y, a, rectified)

    def f(x):
        return torch.cat(vector_field(c, x[:, :5], x[:, 5:], rectified), -1)

    x = torch.cat([y, a], -1)
    h = 1e-6
    fd = torch.stack([(f(x + h * e) - f(x - h * e)) / (2 * h) for e in torch.eye(10, dtype=DTYPE)], -1)
    assert torch.allclose(fd, J, rtol=1e-6, atol=1e-6 * J.abs().max().item())


def test_jacobian_at_fixed_point_has_spec_blocks(gen):
    """docs/equations.md, 'Jacobian at the fixed point': J11 = -T_y⁻¹ diag(√a), J12 = -T_y⁻¹ diag(y/(2√a)),
    J21 = 2 T_a⁻¹ W diag(a y), J22 = T_a⁻¹(-I + W diag(y²))."""
    c = sample_broad(8, 4, gen)
    y, a = fixed_point_identity(c)
    J = jacobian(c, y, a)
    ty, ta = c.tau_y.unsqueeze(-1), c.tau_a.unsqueeze(-1)
    assert torch.allclose(J[:, :4, :4], -torch.diag_embed(a.sqrt()) / ty)
    assert torch.allclose(J[:, :4, 4:], -torch.diag_embed(y / (2 * a.sqrt())) / ty)
    assert torch.allclose(J[:, 4:, :4], 2 * c.W * (a * y).unsqueeze(-2) / ta)
    assert torch.allclose(J[:, 4:, 4:], (-torch.eye(4, dtype=DTYPE) + c.W * (y**2).unsqueeze(-2)) / ta)


@pytest.mark.parametrize("rectified", [False, True])
def test_closed_form_is_a_fixed_point_and_the_attractor(gen, rectified):
    c = sample_unit(32, 6, gen, wr_bound=None)
    y, a = fixed_point_identity(c, rectified)
    assert residual(c, y, a, rectified).max() < 1e-14
    traj = simulate(c, torch.zeros_like(y), torch.zeros_like(a), 0.1, 20000, rectified, tol=1e-13)
    assert traj.converged.all() and not traj.diverged.any()
    assert torch.allclose(traj.y, y, atol=1e-10) and torch.allclose(traj.a, a, atol=1e-10)


def test_rectified_fixed_point_passes_negative_drive_through(gen):
    c = sample_unit(8, 5, gen, wr_bound=None)
    y, a = fixed_point_identity(c, rectified=True)
    neg = c.drive <= 0
    assert torch.equal(y[neg], c.drive[neg])
    assert (y[~neg] > 0).all()


def test_newton_polish_recovers_fixed_point(gen):
    c = sample_unit(8, 6, gen, wr_bound=None)
    y, a = fixed_point_identity(c)
    yp, ap = newton_polish(c, y * 1.01, a * 0.99)
    assert torch.allclose(yp, y, atol=1e-12) and torch.allclose(ap, a, atol=1e-12)


def test_simulate_flags_divergence():
    c = sample_unit(2, 3, torch.Generator().manual_seed(0), wr_bound=None)
    traj = simulate(c, torch.ones(2, 3, dtype=DTYPE), torch.ones(2, 3, dtype=DTYPE), 5.0, 200)
    assert traj.diverged.all() and torch.isfinite(traj.y).all()


def test_rk4_records_a_path(gen):
    c = sample_unit(3, 4, gen, wr_bound=None)
    traj = simulate(
        c, torch.zeros(3, 4, dtype=DTYPE), torch.zeros(3, 4, dtype=DTYPE), 0.1, 50, method="rk4", record_every=10
    )
    assert traj.ys.shape == (3, 5, 4) and traj.t.shape == (3, 5)
    assert torch.allclose(traj.t[0], torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0], dtype=DTYPE))


def test_samplers(gen):
    c = sample_unit(10, 8, gen, wr_bound=2.0)
    assert torch.allclose(torch.linalg.matrix_norm(c.Wr, ord=2), torch.full((10,), 2.0, dtype=DTYPE))
    assert torch.allclose(c.z.norm(dim=-1), torch.ones(10, dtype=DTYPE))
    b = sample_broad(50, 6, gen)
    assert (b.W >= 0).all() and (b.tau_y > 0).all() and (b.z < 0).any() and (b.z > 0).any()
    assert torch.equal(
        sample_broad(3, 4, torch.Generator().manual_seed(5)).W, sample_broad(3, 4, torch.Generator().manual_seed(5)).W
    )
