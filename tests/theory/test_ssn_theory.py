"""The SSN contrast model (rate form) used by the ssn_contrast experiment."""

import torch

from organics_bench.theory.circuit import DTYPE
from organics_bench.theory.ssn import sample_ssn, simulate_ssn, ssn_jacobian, ssn_vector_field


def test_dale_law_signs():
    W = sample_ssn(5, 8, 2, torch.Generator().manual_seed(0))
    assert W.shape == (5, 10, 10)
    assert (W[:, :, :8] > 0).all() and (W[:, :, 8:] < 0).all()


def test_jacobian_matches_autograd():
    gen = torch.Generator().manual_seed(1)
    W = sample_ssn(1, 6, 3, gen)[0]
    r = torch.rand(9, generator=gen, dtype=DTYPE) * 5
    h = torch.full((9,), 3.0, dtype=DTYPE)
    tau = torch.cat([torch.full((6,), 20.0), torch.full((3,), 10.0)]).to(DTYPE)
    J_auto = torch.func.jacrev(lambda x: ssn_vector_field(x, W, h, tau))(r)
    assert torch.allclose(ssn_jacobian(r, W, h, tau), J_auto, atol=1e-12)


def test_weak_input_converges_to_stable_point():
    gen = torch.Generator().manual_seed(2)
    W = sample_ssn(10, 8, 2, gen)
    tau = torch.cat([torch.full((8,), 20.0), torch.full((2,), 10.0)]).to(DTYPE).expand(10, -1)
    h = torch.full((10, 10), 1.0, dtype=DTYPE)
    out = simulate_ssn(W, h, tau, 0.5, 4000)
    assert out.converged.all()
    assert (torch.linalg.eigvals(ssn_jacobian(out.r, W, h, tau)).real.amax(-1) < 0).all()
