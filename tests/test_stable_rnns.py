"""coRNN, Lipschitz RNN and AntisymmetricRNN (organics_bench/models/stable_rnns.py) against their papers' updates,
written out here in float64 NumPy in the papers' column-vector notation (one sample at a time); their parameter
counts at the paper settings; the fast sequence path against the `step` loop; and a short learning run on the
bundled real digits.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_module
from hydra.utils import instantiate

from organics_bench.models.base import DynamicalModel, HasVectorField, count_trainable
from organics_bench.models.stable_rnns import AntisymmetricRNN, CoRNN, LipschitzRNN

D, N, BATCH = 3, 9, 5


def moved_off_init(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """The model in float64 with every weight moved off its initialisation, so that each term of the update matters."""
    torch.manual_seed(seed)
    model = model.double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.4 * torch.randn_like(p))
    return model


def array(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy().astype(np.float64)


def tanh(v):
    return np.tanh(v)


def sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


# ----- (a) each step is its paper's update -------------------------------------------------------------------------


@pytest.mark.parametrize("damping", ["explicit", "implicit"])
def test_cornn_step_is_the_imex_update(damping):
    m = moved_off_init(CoRNN(D, 10, N, dt=0.3, gamma=1.7, epsilon=2.9, damping=damping), 1)
    rng = np.random.default_rng(1)
    u, y0, z0 = rng.normal(size=(BATCH, D)), rng.normal(size=(BATCH, N)), rng.normal(size=(BATCH, N))
    got = array(m.step(torch.from_numpy(u), torch.from_numpy(np.concatenate([y0, z0], 1))))
    W, Wz, V, b = array(m.W), array(m.W_z), array(m.V), array(m.b)
    dt, gamma, eps = 0.3, 1.7, 2.9
    # the official cell (tk-rusch/coRNN network.py) concatenates (u, z, y) into one Linear(d + 2n, n)
    official_weight = np.concatenate([V, Wz, W], 1)
    for i in range(BATCH):
        force = tanh(official_weight @ np.concatenate([u[i], z0[i], y0[i]]) + b)
        y, z = got[i, :N], got[i, N:]
        if damping == "explicit":  # official code: damping on z_{n-1}
            expected_z = z0[i] + dt * (force - gamma * y0[i] - eps * z0[i])
            np.testing.assert_allclose(z, expected_z, rtol=0, atol=1e-12)
        else:  # paper eq. (3): z_n = z_{n-1} + dt sigma(..) - dt gamma y_{n-1} - dt eps z_n, checked as its residual
            residual = z - (z0[i] + dt * force - dt * gamma * y0[i] - dt * eps * z)
            np.testing.assert_allclose(residual, 0.0, rtol=0, atol=1e-12)
        np.testing.assert_allclose(y, y0[i] + dt * z, rtol=0, atol=1e-12)  # y_n = y_{n-1} + dt z_n
    assert np.abs(got - np.concatenate([y0, z0], 1)).max() > 1e-2


def lipschitz_matrix_np(M: np.ndarray, beta: float, gamma: float) -> np.ndarray:
    return (1 - beta) * (M + M.T) + beta * (M - M.T) - gamma * np.eye(len(M))


@pytest.mark.parametrize("scheme", ["euler", "rk2"])
def test_lipschitz_step_is_the_papers_discretisation(scheme):
    beta, gamma_a, gamma_w, eps = 0.65, 0.2, 0.05, 0.4
    m = moved_off_init(
        LipschitzRNN(D, 10, N, beta=beta, gamma_a=gamma_a, gamma_w=gamma_w, epsilon=eps, scheme=scheme), 2
    )
    rng = np.random.default_rng(2)
    x, h0 = rng.normal(size=(BATCH, D)), rng.normal(size=(BATCH, N))
    got = array(m.step(torch.from_numpy(x), torch.from_numpy(h0)))
    A = lipschitz_matrix_np(array(m.M_A), beta, gamma_a)
    W = lipschitz_matrix_np(array(m.M_W), beta, gamma_w)
    U, b = array(m.input.weight), array(m.input.bias)
    for i in range(BATCH):

        def f(h, x_i=x[i]):  # h' = A_beta h + tanh(W_beta h + U x + b)
            return A @ h + tanh(W @ h + U @ x_i + b)

        expected = h0[i] + eps * f(h0[i]) if scheme == "euler" else h0[i] + eps * f(h0[i] + eps / 2 * f(h0[i]))
        np.testing.assert_allclose(got[i], expected, rtol=0, atol=1e-12)
    field = array(m.vector_field(torch.from_numpy(h0), torch.from_numpy(x)))
    np.testing.assert_allclose(field[0], eps * (A @ h0[0] + tanh(W @ h0[0] + U @ x[0] + b)), rtol=0, atol=1e-12)
    assert np.abs(got - h0).max() > 1e-2


def test_lipschitz_matrices_have_the_papers_structure():
    m = moved_off_init(LipschitzRNN(D, 10, N, beta=0.8, gamma_a=0.3, gamma_w=0.1), 3)
    A, W = (array(M) for M in m.matrices())
    # symmetric part (1 - beta)(M + M^T) - gamma I, skew part beta (M - M^T)
    M = array(m.M_A)
    np.testing.assert_allclose((A + A.T) / 2, 0.2 * (M + M.T) - 0.3 * np.eye(N), atol=1e-12)
    np.testing.assert_allclose((A - A.T) / 2, 0.8 * (M - M.T), atol=1e-12)
    np.testing.assert_allclose(array(m.recurrent_matrix()), A, atol=0)
    np.testing.assert_allclose(np.diag(W - lipschitz_matrix_np(array(m.M_W), 0.8, 0.0)), -0.1, atol=1e-12)


@pytest.mark.parametrize("gated", [False, True])
def test_antisymmetric_step_is_the_papers_euler_step(gated):
    eps, gamma = 0.3, 0.15
    m = moved_off_init(AntisymmetricRNN(D, 10, N, epsilon=eps, gamma=gamma, gated=gated), 4)
    rng = np.random.default_rng(4)
    x, h0 = rng.normal(size=(BATCH, D)), rng.normal(size=(BATCH, N))
    got = array(m.step(torch.from_numpy(x), torch.from_numpy(h0)))
    U = np.zeros((N, N))
    U[np.triu_indices(N, 1)] = array(m.upper)  # W - W^T from the entries above the diagonal
    A = U - U.T - gamma * np.eye(N)
    Vh, bh = array(m.input.weight), array(m.input.bias)
    for i in range(BATCH):
        update = tanh(A @ h0[i] + Vh @ x[i] + bh)
        if gated:
            update = sigmoid(A @ h0[i] + array(m.gate_input.weight) @ x[i] + array(m.gate_input.bias)) * update
        np.testing.assert_allclose(got[i], h0[i] + eps * update, rtol=0, atol=1e-12)
    np.testing.assert_allclose(
        array(m.vector_field(torch.from_numpy(h0), torch.from_numpy(x))), got - h0, rtol=0, atol=1e-12
    )
    assert np.abs(got - h0).max() > 1e-2


def test_antisymmetric_parameterisation_spans_every_w_minus_w_transpose():
    m = AntisymmetricRNN(1, 10, 6).double()
    W = torch.randn(6, 6, dtype=torch.float64)
    with torch.no_grad():
        m.upper.copy_((W - W.T)[tuple(torch.triu_indices(6, 6, 1))])
    torch.testing.assert_close(m.antisymmetric(), W - W.T, rtol=0, atol=1e-12)
    eigenvalues = torch.linalg.eigvals(m.recurrent_matrix())
    torch.testing.assert_close(eigenvalues.real, torch.full((6,), -m.gamma, dtype=torch.float64), rtol=0, atol=1e-9)


# ----- (b) parameter counts at the paper settings -------------------------------------------------------------------

PAPER_EXPERIMENTS = {  # experiment: (exact count, the paper's own count in thousands, where the paper gives it)
    "paper/table2_cornn_smnist": (134_154, 134, "Rusch & Mishra, ICLR 2021, sMNIST/psMNIST table: 256 units, 134k"),
    "paper/table2_cornn_psmnist": (134_154, 134, "same table"),
    "paper/table2_lipschitz_rnn_smnist": (34_314, 34, "Erichson et al., ICLR 2021, Table 1: 128 units, 34k"),
    "paper/table2_lipschitz_rnn_psmnist": (34_314, 34, "same table"),
    "paper/table2_antisymmetric_rnn_smnist": (9_674, 10, "Chang et al., ICLR 2019, Table 2: 128 units, 10k"),
    "paper/table2_antisymmetric_rnn_psmnist": (9_674, 10, "same table"),
}


@pytest.mark.parametrize("experiment", sorted(PAPER_EXPERIMENTS))
def test_parameter_counts_at_the_paper_settings_equal_the_papers(experiment):
    exact, thousands, _source = PAPER_EXPERIMENTS[experiment]
    with initialize_config_module("organics_bench.conf", version_base="1.3"):
        cfg = compose("config", overrides=[f"experiment={experiment}"])
    model = instantiate(cfg.model, d_input=1, n_classes=10)  # one pixel per step, ten digits
    assert count_trainable(model) == exact
    assert round(exact / 1000) == thousands
    assert cfg.paper.params == f"{thousands}k"


def test_parameter_counts_by_formula():
    n, d, c = 256, 1, 10
    assert count_trainable(CoRNN(d, c, n)) == n * (d + 2 * n + 1) + (n + 1) * c  # official Linear(d + 2n, n) + readout
    n = 128
    assert count_trainable(LipschitzRNN(d, c, n)) == 2 * n * n + n * (d + 1) + (n + 1) * c  # M_A, M_W, U, b, readout
    assert count_trainable(AntisymmetricRNN(d, c, n)) == n * (n - 1) // 2 + n * (d + 1) + (n + 1) * c
    assert count_trainable(AntisymmetricRNN(d, c, n, gated=True)) == n * (n - 1) // 2 + 2 * n * (d + 1) + (n + 1) * c


# ----- (c) the fast path is the step loop ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: CoRNN(D, 10, N, dt=0.2, damping="explicit"),
        lambda: CoRNN(D, 10, N, dt=0.2, damping="implicit"),
        lambda: LipschitzRNN(D, 10, N, epsilon=0.2, scheme="euler"),
        lambda: LipschitzRNN(D, 10, N, epsilon=0.2, scheme="rk2"),
        lambda: AntisymmetricRNN(D, 10, N, epsilon=0.2, gated=False),
        lambda: AntisymmetricRNN(D, 10, N, epsilon=0.2, gated=True),
    ],
    ids=[
        "cornn-explicit",
        "cornn-implicit",
        "lipschitz-euler",
        "lipschitz-rk2",
        "antisymmetric",
        "antisymmetric-gated",
    ],
)
def test_sequence_path_matches_the_step_loop(make):
    torch.manual_seed(5)
    m = make()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x = torch.randn(4, 40, D)
    fast, slow = m.run_steps(x), DynamicalModel.run_steps(m, x)
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-6)
    m(x).square().sum().backward()  # and it trains through the fast path: every parameter receives a gradient
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())


def test_only_the_euler_fields_are_vector_fields():
    """The diagnostics take Re(λ) of `vector_field` where there is one, |λ| of the step map otherwise: coRNN's IMEX
    step is not state + field, so it must not offer one."""
    assert not isinstance(CoRNN(1, 10, 4), HasVectorField)
    assert isinstance(LipschitzRNN(1, 10, 4), HasVectorField) and isinstance(AntisymmetricRNN(1, 10, 4), HasVectorField)


@pytest.mark.parametrize("bad", [lambda: CoRNN(1, 10, 4, damping="semi"), lambda: LipschitzRNN(1, 10, 4, scheme="rk4")])
def test_unknown_scheme_is_refused(bad):
    with pytest.raises(ValueError):
        bad()


# ----- (d) a short learning run on the bundled real digits -----------------------------------------------------------

# 14 rows of 14 pixels (bundled digits, 3,500 train / 1,000 test), 64 units, Adam lr 0.01, batch 100, 2 epochs (70
# steps), time constants for 14 steps; under a second per model. Test accuracy measured on this 2-core machine (chance
# 0.10), seeds 0 / 1 / 2: coRNN 0.741 / 0.722 / 0.762, Lipschitz RNN 0.701 / 0.732 / 0.706, AntisymmetricRNN
# 0.817 / 0.836 / 0.842. Thresholds sit well below the worst seed.
LEARNING = {  # name: (model, lr, threshold)
    "cornn": (lambda: CoRNN(14, 10, 64, dt=0.4, gamma=1.0, epsilon=1.0), 0.01, 0.55),
    "lipschitz_rnn": (lambda: LipschitzRNN(14, 10, 64, epsilon=0.5), 0.01, 0.55),
    "antisymmetric_rnn": (lambda: AntisymmetricRNN(14, 10, 64, epsilon=0.5, gamma=0.1), 0.01, 0.65),
}


@pytest.fixture(scope="module")
def digits():
    from organics_bench.tasks.sequential_mnist import SequentialMNIST

    return SequentialMNIST("smnist", source="bundled", download=False, layout="rows", image_size=14).load()


def learn(make, lr: float, data, seed: int, epochs: int = 2, batch: int = 100) -> float:
    torch.manual_seed(seed)
    model = make()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    x, y = data.train.x, data.train.y
    for _ in range(epochs):
        order = torch.randperm(len(y))
        for start in range(0, len(y), batch):
            index = order[start : start + batch]
            optimizer.zero_grad()
            F.cross_entropy(model(x[index]), y[index]).backward()
            optimizer.step()
    with torch.no_grad():
        return (model(data.test.x).argmax(-1) == data.test.y).float().mean().item()


@pytest.mark.parametrize("name", sorted(LEARNING))
def test_model_learns_real_digits(digits, name):
    make, lr, threshold = LEARNING[name]
    accuracy = learn(make, lr, digits, seed=0)
    assert accuracy > threshold, accuracy
