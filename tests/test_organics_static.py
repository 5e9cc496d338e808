"""The ORGaNICs fixed-point classifier: parameter counts, true ODE fixed points, Algorithm 1, gradients, shapes."""

import pytest
import torch
import torch.nn.functional as F

from organics_bench.equations import closed_form_fixed_point
from organics_bench.models.base import count_trainable
from organics_bench.models.organics_static import RECURRENCES, FixedPointLayer, OrganicsStatic


def spec_rhs(y, a, drive, floor, W, W_r):
    """docs/equations.md, 'Main model': with tau = 1, written out independently of the module."""
    dy = -y + drive + (1 - torch.sqrt(F.relu(a))) * (y @ W_r.T)
    da = -a + floor + (y**2 * F.relu(a)) @ W.T
    return dy, da


def randomize(layer: FixedPointLayer) -> None:
    """Move every weight of a layer off its init (W_r becomes a random matrix)."""
    with torch.no_grad():
        layer.b0_logit.normal_()
        layer.log_W.add_(0.3 * torch.randn_like(layer.log_W))
        if layer.recurrence == "bounded":
            layer.W_r.copy_(torch.randn_like(layer.W_r))


def random_model(recurrence: str, layers=(12, 8), **kwargs) -> OrganicsStatic:
    model = OrganicsStatic(784, 10, list(layers), recurrence, **kwargs).double()
    for layer in model.layers:
        randomize(layer)
    return model


def effective_recurrence(layer: FixedPointLayer) -> torch.Tensor:
    W_r = layer.recurrent_matrix()
    return torch.eye(layer.n_units, dtype=layer.log_W.dtype) if W_r is None else W_r


def test_parameter_counts_match_the_paper():
    assert count_trainable(FixedPointLayer(40, 50)) == 6_550
    assert count_trainable(FixedPointLayer(40, 80)) == 12_880
    model = OrganicsStatic(784, 10, [120, 60], "bounded")
    assert count_trainable(model.autoencoder) == 662_264
    assert [count_trainable(layer) for layer in model.layers] == [38_520, 21_660]
    assert count_trainable(model) == 723_054  # the reference notebook: 723K trainable
    assert count_trainable(OrganicsStatic(784, 10, [50])) == 662_264 + 6_550 + 510


def test_vector_field_is_the_main_model():
    torch.manual_seed(0)
    layer = FixedPointLayer(7, 9, "bounded").double()
    randomize(layer)
    y, a, drive = torch.randn(5, 9).double(), torch.rand(5, 9).double(), torch.randn(5, 9).double()
    a[0, :3] = -0.5  # negative modulators exercise the rectification
    expected = torch.cat(spec_rhs(y, a, drive, layer.floor(), torch.exp(layer.log_W), effective_recurrence(layer)), -1)
    torch.testing.assert_close(layer.vector_field(torch.cat([y, a], -1), drive), expected)


@pytest.mark.parametrize("recurrence", RECURRENCES)
def test_steady_state_is_a_fixed_point_of_the_ode(recurrence):
    torch.manual_seed(1)
    model = random_model(recurrence, iterations=30)
    x = torch.rand(16, 1, 28, 28, dtype=torch.float64)
    per_layer = model.layer_steady_states(x)
    assert [s.state.shape for s in per_layer] == [(16, 24), (16, 16)] and [s.units for s in per_layer] == [12, 8]
    for layer, found in zip(model.layers, per_layer):
        assert found.residual.shape == (16,) and found.residual.max() < 1e-5
        assert found.drive.abs().max() > 0.1  # a fixed point of a real drive, not of zero input
        torch.testing.assert_close(found.residual, layer.vector_field(found.state, found.drive).norm(dim=-1))
    logits = model.readout_layer(model.layers[-1].firing_rate(per_layer[-1].state))
    torch.testing.assert_close(logits, model(x))  # the fixed points the forward passes through


def test_official_diag_a_is_not_a_fixed_point():
    torch.manual_seed(1)
    faithful, official = (
        random_model("bounded", iterations=30),
        random_model("bounded", iterations=30, official_diag_a=True),
    )
    official.load_state_dict(faithful.state_dict())
    x = torch.rand(16, 784, dtype=torch.float64)
    assert max(found.residual.max() for found in faithful.layer_steady_states(x)) < 1e-5
    assert official.layer_steady_states(x)[0].residual.min() > 1e-3
    assert (official(x) - faithful(x)).abs().max() > 1e-3


def test_algorithm_1_converges_to_the_simulated_fixed_point():
    """Paper Fig. 4: a 10-unit layer with a random W_r of largest singular value 1, ground truth by Euler."""
    torch.manual_seed(2)
    layer = FixedPointLayer(6, 10, "bounded").double()
    randomize(layer)
    drive = layer.drive(torch.randn(32, 6, dtype=torch.float64)).detach()
    floor, W, W_r = layer.floor().detach(), torch.exp(layer.log_W).detach(), layer.recurrent_matrix().detach()
    y, a = torch.full_like(drive, 0.01), torch.full_like(drive, 0.01)
    for _ in range(8_000):  # dt = 0.05 tau for T = 400 tau
        dy, da = spec_rhs(y, a, drive, floor, W, W_r)
        y, a = y + 0.05 * dy, a + 0.05 * da
    assert torch.cat(spec_rhs(y, a, drive, floor, W, W_r), -1).abs().max() < 1e-12
    truth = torch.cat([y, a], -1)

    def error(iterations: int, official: bool = False) -> torch.Tensor:
        layer.iterations, layer.official_diag_a = iterations, official
        with torch.no_grad():
            return (layer.solve(drive) - truth).norm(dim=-1).max()

    errors = [error(k) for k in (1, 5, 10, 20)]
    assert errors[0] > errors[1] > errors[2] > errors[3]
    assert errors[3] < 1e-5
    assert error(20, official=True) > 1e-2


def test_bounded_recurrence_starts_at_identity_and_stays_bounded():
    torch.manual_seed(3)
    layer = FixedPointLayer(5, 8, "bounded").double()
    torch.testing.assert_close(layer.recurrent_matrix(), torch.eye(8, dtype=torch.float64))
    drive = layer.drive(torch.randn(4, 5, dtype=torch.float64))
    closed = torch.cat(closed_form_fixed_point(drive, layer.floor(), torch.exp(layer.log_W), layer.eps), -1)
    torch.testing.assert_close(layer.solve(drive), closed)  # Algorithm 1 with W_r = I is the closed form
    randomize(layer)
    assert torch.linalg.matrix_norm(layer.recurrent_matrix(), ord=2).item() == pytest.approx(1.0, abs=1e-12)
    assert OrganicsStatic(784, 10).recurrent_matrix() is None
    with pytest.raises(ValueError):
        FixedPointLayer(5, 8, "identity", official_diag_a=True)


@pytest.mark.parametrize("recurrence", RECURRENCES)
def test_gradients_reach_every_parameter(recurrence):
    torch.manual_seed(4)
    model = OrganicsStatic(784, 10, [12, 8], recurrence)
    x, labels = torch.rand(6, 1, 28, 28), torch.randint(0, 10, (6,))
    loss, _ = model.loss(x, labels)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    names = {name for name, _ in model.named_parameters()}
    assert {"layers.0.log_W", "layers.0.b0_logit", "layers.1.W_zx", "autoencoder.decoder.4.weight"} <= names
    assert ("layers.0.W_r" in names) == (recurrence == "bounded")


def test_images_and_vectors_give_the_same_logits_and_the_loss_is_ce_plus_mse():
    torch.manual_seed(5)
    model = OrganicsStatic(784, 10, [50])
    images, labels = torch.rand(3, 1, 28, 28), torch.tensor([1, 4, 9])
    logits = model(images)
    assert logits.shape == (3, 10) and model.kind == "static"
    torch.testing.assert_close(model(images.reshape(3, 784)), logits)
    loss, loss_logits = model.loss(images, labels)
    reconstruction = model.autoencoder.decoder(model.encode(images))
    expected = F.cross_entropy(logits, labels) + F.mse_loss(reconstruction, images.reshape(3, 784))
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(loss_logits, logits)
    (found,) = model.layer_steady_states(images)
    assert found.state.shape == (3, 100) and found.residual.shape == (3,)
