"""Algorithm 1 with the hand-written backward (fixed_point_solver=adjoint) against autograd through the reference
iterates (fixed_point_solver=autograd): forward output and every parameter gradient, both fixed-point variants."""

import pytest
import torch

from organics_bench.models import fixed_point_solver
from organics_bench.models.organics_static import FixedPointLayer, OrganicsStatic

TOLERANCES = {torch.float64: {"rtol": 1e-10, "atol": 1e-12}, torch.float32: {"rtol": 1e-5, "atol": 1e-7}}


@pytest.fixture(params=["cpu-kernels", "torch"])
def lu_backend(request, monkeypatch) -> str:
    """Run the test with the batched LU kernel (built here: CI must have a C compiler) and with torch.linalg's
    (the path CUDA takes)."""
    if request.param == "torch":
        monkeypatch.setattr(fixed_point_solver, "backend", lambda tensor: "torch")
    for dtype in (torch.float32, torch.float64):
        assert fixed_point_solver.backend(torch.zeros(1, dtype=dtype)) == request.param
    return request.param


def perturbed_model(
    official_diag_a: bool, dtype: torch.dtype, layers=(13, 8), iterations: int = 10, scale: float = 0.5
) -> OrganicsStatic:
    """A two-layer bounded model moved off its init; W_r = I + scale * noise, so A_k is no longer diagonal."""
    torch.manual_seed(0)
    model = OrganicsStatic(784, 10, list(layers), "bounded", iterations, official_diag_a).to(dtype)
    with torch.no_grad():
        for layer in model.layers:
            layer.W_r.add_(scale * torch.randn_like(layer.W_r))
            layer.b0_logit.normal_()
            layer.log_W.add_(0.3 * torch.randn_like(layer.log_W))
    return model


def output_and_gradients(model: OrganicsStatic, solver: str, x: torch.Tensor, labels: torch.Tensor):
    for layer in model.layers:
        layer.fixed_point_solver = solver
    model.zero_grad(set_to_none=True)
    loss, logits = model.loss(x, labels)
    loss.backward()
    return logits.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}


def assert_same(model: OrganicsStatic, x: torch.Tensor, labels: torch.Tensor) -> None:
    tolerance = TOLERANCES[x.dtype]
    expected_logits, expected = output_and_gradients(model, "autograd", x, labels)
    logits, grads = output_and_gradients(model, "adjoint", x, labels)
    torch.testing.assert_close(logits, expected_logits, **tolerance)
    assert set(grads) == set(expected) and {"layers.0.W_r", "layers.1.W_r"} <= set(grads)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, expected[name], **tolerance, msg=lambda m, name=name: f"{name}: {m}")
        assert grad.abs().max() > 0, name


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("official_diag_a", [False, True])
def test_adjoint_equals_autograd_in_output_and_every_gradient(official_diag_a, dtype, lu_backend):
    model = perturbed_model(official_diag_a, dtype)
    assert (model.layers[0].recurrent_matrix() - torch.eye(13, dtype=dtype)).abs().max() > 0.1
    x, labels = torch.rand(37, 784, dtype=dtype), torch.randint(0, 10, (37,))  # 37: no multiple of the lanes
    assert_same(model, x, labels)


@pytest.mark.parametrize("iterations", [0, 1, 3])
@pytest.mark.parametrize("official_diag_a", [False, True])
def test_adjoint_equals_autograd_for_any_number_of_iterations(iterations, official_diag_a, lu_backend):
    model = perturbed_model(official_diag_a, torch.float64, layers=(5, 17), iterations=iterations)
    assert_same(model, torch.rand(9, 784, dtype=torch.float64), torch.randint(0, 10, (9,)))


def test_adjoint_equals_autograd_at_init_and_for_a_recurrence_that_needs_row_interchanges():
    """W_r = I (the init: A_k diagonal) and a large random W_r (A_k far from diagonally dominant)."""
    x, labels = torch.rand(20, 784, dtype=torch.float64), torch.randint(0, 10, (20,))
    assert_same(perturbed_model(False, torch.float64, scale=0.0), x, labels)
    assert_same(perturbed_model(True, torch.float64, scale=30.0), x, labels)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_batched_lu_solves_and_adjoint_solves_with_pivoting(dtype, lu_backend):
    """Every sample's A = I - diag(c) W_r, with a zero first pivot and large gains, against torch.linalg.solve."""
    torch.manual_seed(1)
    batch, n = 21, 19
    W_r, c, d, g = (
        torch.randn(n, n, dtype=dtype),
        3 * torch.randn(batch, n, dtype=dtype),
        torch.randn(batch, n, dtype=dtype),
        torch.randn(batch, n, dtype=dtype),
    )
    c[0, 0] = 1 / W_r[0, 0]  # A[0, 0] = 0: no solve without a row interchange
    A = torch.eye(n, dtype=dtype) - c.unsqueeze(-1) * W_r
    solver = fixed_point_solver._KernelLU(dtype) if lu_backend == "cpu-kernels" else fixed_point_solver._TorchLU()
    y, factors = solver.factor_solve(c, W_r, d, keep=True)
    x = solver.adjoint_solve(factors, g)
    tolerance = {"rtol": 1e-9, "atol": 1e-9} if dtype == torch.float64 else {"rtol": 1e-3, "atol": 1e-3}
    torch.testing.assert_close(y, torch.linalg.solve(A, d), **tolerance)
    torch.testing.assert_close(x, torch.linalg.solve(A.mT, g), **tolerance)
    torch.testing.assert_close(solver.factor_solve(c, W_r, d, keep=False)[0], y, rtol=0, atol=0)


def test_two_forwards_before_their_backwards_keep_their_own_factors():
    """Reused factor buffers: the second forward must not overwrite the first's before its backward."""
    model = perturbed_model(False, torch.float64)
    first, second = (torch.rand(16, 784, dtype=torch.float64) for _ in range(2))
    labels = torch.randint(0, 10, (16,))
    expected = [output_and_gradients(model, "autograd", x, labels)[1] for x in (first, second)]
    for layer in model.layers:
        layer.fixed_point_solver = "adjoint"
    losses = [model.loss(x, labels)[0] for x in (first, second)]
    for loss, want in zip(losses, expected):
        model.zero_grad(set_to_none=True)
        loss.backward()
        for name, p in model.named_parameters():
            torch.testing.assert_close(p.grad, want[name], **TOLERANCES[torch.float64])


def test_no_grad_forward_matches_and_a_second_backward_is_refused():
    model = perturbed_model(False, torch.float64)
    x = torch.rand(8, 784, dtype=torch.float64)
    with torch.no_grad():
        without = model(x)
    loss = model(x).sum()
    torch.testing.assert_close(without, model(x).detach(), **TOLERANCES[torch.float64])
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="retain_graph"):
        loss.backward()


def test_unknown_solver_is_refused():
    with pytest.raises(ValueError, match="fixed_point_solver"):
        FixedPointLayer(5, 8, "bounded", fixed_point_solver="implicit")
