"""The ORGaNICs cell against the paper's equations, the LSTM step against nn.LSTM, parameter counts, and the
normalization weights and closed-form fixed point shared with the static models (`organics_bench.equations`)."""

import pytest
import torch
import torch.nn.functional as F

from organics_bench.equations import initial_log_normalization, normalization_weights
from organics_bench.models.base import DynamicalModel, count_trainable
from organics_bench.models.conv import EPS, ConvOrganicsLayer
from organics_bench.models.organics import RECURRENCES, Organics
from organics_bench.models.organics_static import FixedPointLayer
from organics_bench.models.rnn import GRU, LSTM, TanhRNN


def spec_euler_step(m: Organics, x: torch.Tensor, y, a, b, b0):
    """docs/equations.md, 'Update equations', written out term by term, independent of the model's own code paths."""
    relu = F.relu
    rate = m.dt_tau_max[:, None] * torch.sigmoid(m.theta)
    z = x @ m.W_zx.T
    if m.rectify_input:
        z = relu(z)
    eye = torch.eye(m.hidden_size, dtype=x.dtype)
    if m.recurrence == "identity":
        rec = relu(y)
    elif m.recurrence == "spectral_norm":
        sigma_max = torch.linalg.svdvals(m.W_r)[0]
        rec = relu(y) @ (eye + m.W_r / sigma_max).T
    else:
        rec = relu(y @ m.W_r.T)
    W = torch.exp(m.log_W)
    if m.clamp_normalization:
        W = W.clamp(0, 1)
    y_new = y + rate[0] * (-y + b * z + (1 - torch.sqrt(relu(a))) * rec)
    a_new = a + rate[1] * (-a + b0**2 * m.sigma**2 + (relu(y) ** 2 * relu(a)) @ W.T)
    b_new = b + rate[2] * (-b + torch.sigmoid(x @ m.W_bx.T + y @ m.W_by.T + a @ m.W_ba.T))
    b0_new = b0 + rate[3] * (-b0 + torch.sigmoid(x @ m.W_b0x.T + y @ m.W_b0y.T + a @ m.W_b0a.T))
    return torch.cat([y_new, a_new, b_new, b0_new], -1)


@pytest.mark.parametrize("recurrence", RECURRENCES)
@pytest.mark.parametrize("rectify_input,clamp,learn_tau", [(False, False, True), (True, True, False)])
def test_step_is_the_papers_euler_step(recurrence, rectify_input, clamp, learn_tau):
    torch.manual_seed(1)
    m = Organics(
        5, 10, 16, recurrence=recurrence, rectify_input=rectify_input, clamp_normalization=clamp, learn_tau=learn_tau
    ).double()
    with torch.no_grad():  # move every weight off its init so each term matters
        for p in m.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x = torch.randn(7, 5, dtype=torch.float64)
    y, a, b, b0 = (
        torch.randn(7, 16).double(),
        torch.rand(7, 16).double(),
        torch.rand(7, 16).double(),
        torch.rand(7, 16).double(),
    )
    a[0, :3] = -0.2  # negative modulators exercise the rectification
    expected = spec_euler_step(m, x, y, a, b, b0)
    got = m.step(x, torch.cat([y, a, b, b0], -1))
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
    assert (got - torch.cat([y, a, b, b0], -1)).abs().max() > 1e-3  # the step really moves the state


@pytest.mark.parametrize("recurrence", RECURRENCES)
def test_sequence_path_matches_per_step_loop(recurrence):
    torch.manual_seed(2)
    m = Organics(3, 10, 12, recurrence=recurrence)
    x = torch.rand(4, 30, 3)
    fast, slow = m.run_steps(x), DynamicalModel.run_steps(m, x)
    torch.testing.assert_close(fast, slow, atol=1e-6, rtol=1e-6)


def test_parameter_counts_match_the_paper():
    assert count_trainable(Organics(1, 10, 128)) == 100_490
    assert count_trainable(Organics(1, 10, 64)) == 25_674
    assert count_trainable(Organics(1, 10, 128, learn_tau=False)) == 99_978
    assert count_trainable(Organics(1, 10, 128, recurrence="identity")) == 100_490 - 128 * 128
    assert count_trainable(LSTM(1, 10, 128)) == 68_362


def test_paper_era_recurrence_is_2I_at_init_and_stays_bounded():
    m = Organics(1, 10, 8)
    torch.testing.assert_close(m.recurrent_matrix(), 2 * torch.eye(8))
    with torch.no_grad():
        m.W_r.mul_(50).add_(torch.randn(8, 8))
    bound = torch.linalg.matrix_norm(m.recurrent_matrix() - torch.eye(8), ord=2).item()
    assert bound == pytest.approx(1.0, abs=1e-5)


def test_initial_state_follows_the_reference_code():
    m = Organics(1, 10, 32)
    y0, a0, b0, b00 = m.initial_state(3).split(32, -1)
    assert torch.allclose(y0.norm(dim=-1), torch.ones(3))
    assert (a0 >= 0).all() and (a0 <= 1).all() and (b0 >= 0).all() and (b0 <= 1).all()
    assert torch.equal(b00, torch.ones(3, 32))
    rates = m.rates().reshape(4, 32)
    assert (rates[0] < 0.02).all() and (rates[1] < 0.005).all() and (rates[2:] < 0.1).all()


@pytest.mark.parametrize("cls", [LSTM, GRU, TanhRNN])
def test_written_out_step_matches_fused_kernel(cls):
    torch.manual_seed(3)
    m = cls(4, 10, 16)
    x = torch.randn(5, 20, 4)
    torch.testing.assert_close(DynamicalModel.run_steps(m, x), m.run_steps(x), atol=1e-5, rtol=1e-5)


def test_baseline_parameter_counts():
    assert count_trainable(GRU(1, 10, 128)) == 51_594
    assert count_trainable(TanhRNN(1, 10, 128)) == 18_058


def test_every_model_draws_the_normalization_weights_alike_and_seeds_give_the_same_numbers():
    """L of W = exp(L): off-diagonal U(-1, 0), diagonal 0, drawn where each model always drew it (pinned at seed 0)."""
    torch.manual_seed(0)
    torch.testing.assert_close(
        initial_log_normalization(3),
        torch.tensor([[0.0, -0.231778, -0.911523], [-0.867970, 0.0, -0.365921], [-0.509907, -0.103555, 0.0]]),
        atol=1e-6,
        rtol=0,
    )
    pinned = {
        lambda: Organics(2, 10, 3): [
            [0.0, -0.794401, -0.406828],
            [-0.887653, 0.0, -0.758292],
            [-0.273763, -0.298920, 0.0],
        ],
        lambda: FixedPointLayer(2, 3): [
            [0.0, -0.717731, -0.318391],
            [-0.084806, 0.0, -0.125844],
            [-0.580592, -0.447093, 0.0],
        ],
        lambda: ConvOrganicsLayer(1, 3): [
            [0.0, -0.846543, -0.758292],
            [-0.273763, 0.0, -0.796176],
            [-0.348946, -0.225514, 0.0],
        ],
    }
    for build, expected in pinned.items():
        torch.manual_seed(0)
        torch.testing.assert_close(build().log_W.detach(), torch.tensor(expected), atol=1e-6, rtol=0)
    L = torch.tensor([[0.0, 0.5], [-2.0, 0.0]])
    torch.testing.assert_close(normalization_weights(L), torch.tensor([[1.0, 1.648721], [0.135335, 1.0]]))
    torch.testing.assert_close(normalization_weights(L, clamp=True), torch.tensor([[1.0, 1.0], [0.135335, 1.0]]))
    m = Organics(1, 10, 2, clamp_normalization=True)
    with torch.no_grad():
        m.log_W.copy_(L)
    torch.testing.assert_close(m.normalization_matrix(), torch.tensor([[1.0, 1.0], [0.135335, 1.0]]))


def test_the_convolutional_layer_is_the_fixed_point_of_its_pooled_circuit():
    """y = b z / sqrt(a), a = (sigma b0)^2 + P(W (b z)^2) + eps with P a 3x3 mean over positions, is where
    dy/dt = -y + b z + (1 - sqrt(a)) y and da/dt = -a + (sigma b0)^2 + P(W (y^2 a)) + eps vanish."""
    torch.manual_seed(7)
    layer = ConvOrganicsLayer(2, 3, sigma=0.5).double()
    with torch.no_grad():
        layer.beta.normal_()
        layer.log_W.add_(0.3 * torch.randn_like(layer.log_W))
    x = torch.randn(2, 2, 5, 6, dtype=torch.float64)
    y, a = layer.fixed_point(x)
    drive = torch.sigmoid(layer.conv_b(x)) * layer.conv_z(x)
    floor = (0.5 * torch.sigmoid(layer.beta)).square()[None, :, None, None]

    def window_sum(t: torch.Tensor) -> torch.Tensor:
        padded = F.pad(t, (1, 1, 1, 1))
        return sum(padded[..., i : i + 5, j : j + 6] for i in range(3) for j in range(3))

    def pool(v: torch.Tensor) -> torch.Tensor:
        mixed = torch.einsum("oc,bchw->bohw", torch.exp(layer.log_W), v)
        return window_sum(mixed) / window_sum(torch.ones_like(mixed))  # the mean over the in-image neighbours

    dy = -y + drive + (1 - a.sqrt()) * y
    da = -a + floor + pool(y.square() * a) + EPS
    assert drive.abs().max() > 0.1
    assert dy.abs().max() < 1e-12 and da.abs().max() < 1e-12
    torch.testing.assert_close(layer(x), F.relu(y).square())
