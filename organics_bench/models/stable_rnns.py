"""The rival stable RNNs of paper Table 2, each written from its own paper's equations (column-vector notation,
one input u_n / x_t per step, linear readout of the last state):

coRNN (Rusch & Mishra, ICLR 2021, arXiv 2010.00951), a network of damped, driven nonlinear oscillators
y'' = tanh(W y + 𝒲 y' + V u + b) - γ y - ε y', written as y' = z and discretised implicit-explicitly (IMEX):

    z_n = z_{n-1} + Δt (tanh(W y_{n-1} + 𝒲 z_{n-1} + V u_n + b) - γ y_{n-1} - ε z_*)
    y_n = y_{n-1} + Δt z_n

where z_* = z_{n-1} in the official code (`tk-rusch/coRNN`, the code behind the paper's numbers: damping="explicit")
and z_* = z_n in the paper's equation (3) (damping="implicit", solved: z_n = (z_{n-1} + Δt(tanh(...) - γ y_{n-1}))
/ (1 + Δt ε)).
State [y, z] (batch, 2 n); readout from y.

Lipschitz RNN (Erichson, Azencot, Queiruga, Hodgkinson & Mahoney, ICLR 2021, arXiv 2006.12070):

    h' = A_β h + tanh(W_β h + U x + b),
    A_β = (1 - β)(M_A + M_Aᵀ) + β(M_A - M_Aᵀ) - γ_A I,   W_β = (1 - β)(M_W + M_Wᵀ) + β(M_W - M_Wᵀ) - γ_W I,

one step of length ε per input: explicit Euler h_t = h_{t-1} + ε h'(h_{t-1}, x_t) (scheme="euler", the paper's
"Lipschitz RNN using Euler" rows and `erichson/LipschitzRNN --model LipschitzRNN`), or the explicit midpoint rule
h_t = h_{t-1} + ε h'(h_{t-1} + ε/2 h'(h_{t-1}, x_t), x_t) (scheme="rk2", the paper's RK2 rows; the official code's
`LipschitzRNN_ODE` with torchdiffeq's fixed-grid midpoint over [0, ε]). The official code multiplies row vectors,
h @ A, i.e. uses A_βᵀ: the same family of matrices with M_A transposed. State h (batch, n).

AntisymmetricRNN (Chang, Chen, Haber & Chi, ICLR 2019, arXiv 1902.09689): forward Euler of h' = tanh(A h + V x + b)
with A = W - Wᵀ - γ I (antisymmetric plus diffusion γ):

    h_t = h_{t-1} + ε tanh((W - Wᵀ - γ I) h_{t-1} + V_h x_t + b_h)                       (gated=False)
    z_t = σ((W - Wᵀ - γ I) h_{t-1} + V_z x_t + b_z),
    h_t = h_{t-1} + ε z_t ⊙ tanh((W - Wᵀ - γ I) h_{t-1} + V_h x_t + b_h)                  (gated=True)

The gate shares the antisymmetric matrix, as in the paper. W - Wᵀ is parameterised by its n(n-1)/2 entries above
the diagonal (S = U - Uᵀ, U strictly upper triangular): the same set of matrices, and the parameter count the paper
reports (10k at 128 units). State h (batch, n).

Diagnostics: the Lipschitz RNN and the AntisymmetricRNN are explicit-Euler steps of a continuous-time field, so
they expose `vector_field` (in units of one step: step = state + vector_field for the Euler schemes) and the
diagnostics take the spectra of its Jacobian (stable iff every Re λ < 0). coRNN's IMEX step is not state + a field,
so it has no `vector_field`: the diagnostics take the spectra of its step map (stable iff every |λ| < 1).
Each cell is a recurrent layer (`CoRNNLayer`, `LipschitzRNNLayer`, `AntisymmetricRNNLayer`: torch.nn.LSTM's
conventions, `RecurrentLayer`) whose `scan` is the same map as the `step` loop with everything that does not depend on
the state computed once (input drives for all steps, the structured matrices), a loop under autograd; tests check the
two agree. The benchmark's classifiers (`CoRNN`, `LipschitzRNN`, `AntisymmetricRNN`) are these layers plus a linear
readout of the last state.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from organics_bench.models.base import DynamicalModel, LayerClassifier, RecurrentLayer

CORNN_DAMPING = ("explicit", "implicit")
LIPSCHITZ_SCHEMES = ("euler", "rk2")


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


class CoRNNState(NamedTuple):
    """The state of a coRNN layer, each (batch, hidden_size): positions y and velocities z = y'."""

    y: torch.Tensor
    z: torch.Tensor


class LipschitzRNNState(NamedTuple):
    """The state of a Lipschitz RNN layer: h (batch, hidden_size)."""

    h: torch.Tensor


class AntisymmetricRNNState(NamedTuple):
    """The state of an AntisymmetricRNN layer: h (batch, hidden_size)."""

    h: torch.Tensor


class CoRNNLayer(RecurrentLayer):
    """The coRNN layer (`RecurrentLayer`: torch.nn.LSTM's conventions); outputs: the positions y after every step;
    state: `CoRNNState` (y, z), zero by default.

    Args:
        input_size: input features per step. hidden_size: oscillators n (paper: 256).
        dt, gamma, epsilon: Δt, γ (restoring force on y) and ε (damping of z).
        damping: "explicit" (official code: -ε z_{n-1}) or "implicit" (paper eq. 3: -ε z_n).
        batch_first: x and the outputs are (batch, time, features) instead of (time, batch, features).

    W, 𝒲, V and b are one `nn.Linear(d + 2n, n)` in the official code; here they are separate parameters with that
    layer's default initialisation, U(-1/sqrt(d + 2n), 1/sqrt(d + 2n)), and the same count: n (d + 2n + 1).
    """

    State = CoRNNState

    def __init__(
        self,
        input_size: int,
        hidden_size: int = 256,
        dt: float = 0.042,
        gamma: float = 2.7,
        epsilon: float = 4.7,
        damping: str = "explicit",
        batch_first: bool = False,
    ) -> None:
        super().__init__(input_size, hidden_size, batch_first)
        _check_choice("damping", damping, CORNN_DAMPING)
        n = hidden_size
        self.dt, self.gamma, self.epsilon, self.damping = dt, gamma, epsilon, damping
        bound = 1.0 / math.sqrt(input_size + 2 * n)
        self.W = nn.Parameter(torch.empty(n, n).uniform_(-bound, bound))  # y -> oscillators
        self.W_z = nn.Parameter(torch.empty(n, n).uniform_(-bound, bound))  # z -> oscillators (the paper's 𝒲)
        self.V = nn.Parameter(torch.empty(n, input_size).uniform_(-bound, bound))
        self.b = nn.Parameter(torch.empty(n).uniform_(-bound, bound))

    def initial_state(self, batch: int) -> torch.Tensor:
        return self.W.new_zeros(batch, 2 * self.hidden_size)

    def _advance(self, y: torch.Tensor, z: torch.Tensor, drive: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(y_n, z_n) from (y_{n-1}, z_{n-1}) and the input drive V u_n + b."""
        force = torch.tanh(drive + y @ self.W.T + z @ self.W_z.T) - self.gamma * y
        if self.damping == "explicit":
            z = z + self.dt * (force - self.epsilon * z)
        else:
            z = (z + self.dt * force) / (1 + self.dt * self.epsilon)
        return y + self.dt * z, z

    def step(self, x_t: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        y, z = state.split(self.hidden_size, -1)
        return torch.cat(self._advance(y, z, x_t @ self.V.T + self.b), -1)

    def scan(
        self, inputs: torch.Tensor, state0: torch.Tensor, outputs: bool
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """The `step` loop with all input drives projected at once (batch-major, the order the classifier's records
        were made in) and y, z kept apart."""
        drives = (inputs.transpose(0, 1) @ self.V.T + self.b).unbind(1)
        y, z = state0.split(self.hidden_size, -1)
        ys = []
        for drive in drives:
            y, z = self._advance(y, z, drive)
            if outputs:
                ys.append(y)
        return (torch.stack(ys) if outputs else None), torch.cat([y, z], -1)


class CoRNN(LayerClassifier, CoRNNLayer, DynamicalModel):
    """coRNN classifier: the coRNN layer (`CoRNNLayer`, whose arguments these are, d_input its input_size) and
    logits = Linear(y_N). Takes x (batch, time, d_input)."""

    def __init__(
        self,
        d_input: int,
        n_classes: int,
        hidden_size: int = 256,
        dt: float = 0.042,
        gamma: float = 2.7,
        epsilon: float = 4.7,
        damping: str = "explicit",
    ) -> None:
        super().__init__(d_input, hidden_size, dt, gamma, epsilon, damping, batch_first=True)
        self.readout_layer = nn.Linear(hidden_size, n_classes)

    def readout(self, state: torch.Tensor) -> torch.Tensor:
        return self.readout_layer(state[..., : self.hidden_size])


def lipschitz_matrix(M: torch.Tensor, beta: float, gamma: float) -> torch.Tensor:
    """(1 - β)(M + Mᵀ) + β(M - Mᵀ) - γ I: symmetric part scaled by 1 - β, skew part by β, shifted by -γ."""
    eye = torch.eye(M.shape[0], dtype=M.dtype, device=M.device)
    return (1 - beta) * (M + M.T) + beta * (M - M.T) - gamma * eye


class LipschitzRNNLayer(RecurrentLayer):
    """The Lipschitz RNN layer (`RecurrentLayer`: torch.nn.LSTM's conventions); outputs: h after every step; state:
    `LipschitzRNNState` (h), zero by default.

    Args:
        input_size: input features per step. hidden_size: units (paper: 128).
        beta: β, the skew-symmetric share of A_β and W_β. gamma_a, gamma_w: γ_A, γ_W (the official code uses one
            `gamma` for both). epsilon: ε, the step of the discretisation.
        init_std: M_A and M_W start as N(0, (init_std / n)^2) entries (official `gaussian_init_`: std init_std / n).
        scheme: "euler" (explicit Euler) or "rk2" (explicit midpoint rule).
        batch_first: x and the outputs are (batch, time, features) instead of (time, batch, features).

    U x + b is `nn.Linear(d, n)` with torch's default init, as in the official code.
    """

    State = LipschitzRNNState

    def __init__(
        self,
        input_size: int,
        hidden_size: int = 128,
        beta: float = 0.75,
        gamma_a: float = 0.001,
        gamma_w: float = 0.001,
        epsilon: float = 0.03,
        init_std: float = 0.1,
        scheme: str = "euler",
        batch_first: bool = False,
    ) -> None:
        super().__init__(input_size, hidden_size, batch_first)
        _check_choice("scheme", scheme, LIPSCHITZ_SCHEMES)
        n = hidden_size
        self.beta, self.gamma_a, self.gamma_w = beta, gamma_a, gamma_w
        self.epsilon, self.scheme = epsilon, scheme
        self.M_A = nn.Parameter(torch.randn(n, n) * (init_std / n))
        self.M_W = nn.Parameter(torch.randn(n, n) * (init_std / n))
        self.input = nn.Linear(input_size, n)

    def matrices(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(A_β, W_β)."""
        return lipschitz_matrix(self.M_A, self.beta, self.gamma_a), lipschitz_matrix(self.M_W, self.beta, self.gamma_w)

    def recurrent_matrix(self) -> torch.Tensor:
        """A_β, the linear part of the field (the official driver prints its eigenvalues every epoch)."""
        return self.matrices()[0]

    def initial_state(self, batch: int) -> torch.Tensor:
        return self.M_A.new_zeros(batch, self.hidden_size)

    @staticmethod
    def _field(h: torch.Tensor, drive: torch.Tensor, stacked: torch.Tensor) -> torch.Tensor:
        """h' = A h + tanh(W h + drive), with `stacked` = [A; W] (2n, n) so both products are one matmul."""
        linear, inner = (h @ stacked.T).chunk(2, -1)
        return linear + torch.tanh(inner + drive)

    def _advance(self, h: torch.Tensor, drive: torch.Tensor, stacked: torch.Tensor) -> torch.Tensor:
        eps = self.epsilon
        if self.scheme == "euler":
            return h + eps * self._field(h, drive, stacked)
        return h + eps * self._field(h + 0.5 * eps * self._field(h, drive, stacked), drive, stacked)

    def vector_field(self, state: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """ε h'(h, x): the field in units of one step (step = state + this for scheme="euler")."""
        return self.epsilon * self._field(state, self.input(x), torch.cat(self.matrices(), 0))

    def step(self, x_t: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        return self._advance(state, self.input(x_t), torch.cat(self.matrices(), 0))

    def scan(
        self, inputs: torch.Tensor, state0: torch.Tensor, outputs: bool
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """The `step` loop with A_β, W_β formed once and all input drives projected at once (batch-major, the order
        the classifier's records were made in)."""
        stacked = torch.cat(self.matrices(), 0)
        h, hs = state0, []
        for drive in self.input(inputs.transpose(0, 1)).unbind(1):
            h = self._advance(h, drive, stacked)
            if outputs:
                hs.append(h)
        return (torch.stack(hs) if outputs else None), h


class LipschitzRNN(LayerClassifier, LipschitzRNNLayer, DynamicalModel):
    """Lipschitz RNN classifier: the Lipschitz RNN layer (`LipschitzRNNLayer`, whose arguments these are, d_input its
    input_size) and logits = Linear(h_T), with torch's default init as in the official code. Takes x (batch, time,
    d_input)."""

    def __init__(
        self,
        d_input: int,
        n_classes: int,
        hidden_size: int = 128,
        beta: float = 0.75,
        gamma_a: float = 0.001,
        gamma_w: float = 0.001,
        epsilon: float = 0.03,
        init_std: float = 0.1,
        scheme: str = "euler",
    ) -> None:
        super().__init__(d_input, hidden_size, beta, gamma_a, gamma_w, epsilon, init_std, scheme, batch_first=True)
        self.readout_layer = nn.Linear(hidden_size, n_classes)

    def readout(self, state: torch.Tensor) -> torch.Tensor:
        return self.readout_layer(state)


class AntisymmetricRNNLayer(RecurrentLayer):
    """The AntisymmetricRNN layer, plain or gated (`RecurrentLayer`: torch.nn.LSTM's conventions); outputs: h after
    every step; state: `AntisymmetricRNNState` (h), zero by default.

    Args:
        input_size: input features per step. hidden_size: units (paper: 128).
        epsilon: ε, the Euler step. gamma: γ, the diffusion. gated: the gated variant.
        init_scale: σ_w; W starts as N(0, σ_w^2 / n) entries (paper appendix C), so each entry of W - Wᵀ above the
            diagonal is drawn from N(0, 2 σ_w^2 / n). V (and V_z) start as N(0, 1/d), the biases at 0 (appendix C).
        batch_first: x and the outputs are (batch, time, features) instead of (time, batch, features).
    """

    State = AntisymmetricRNNState

    def __init__(
        self,
        input_size: int,
        hidden_size: int = 128,
        epsilon: float = 0.01,
        gamma: float = 0.1,
        init_scale: float = 1.0,
        gated: bool = False,
        batch_first: bool = False,
    ) -> None:
        super().__init__(input_size, hidden_size, batch_first)
        n = hidden_size
        self.epsilon, self.gamma, self.gated = epsilon, gamma, gated
        rows, cols = torch.triu_indices(n, n, offset=1)
        self.register_buffer("upper_rows", rows, persistent=False)
        self.register_buffer("upper_cols", cols, persistent=False)
        self.upper = nn.Parameter(torch.randn(len(rows)) * (init_scale * math.sqrt(2.0 / n)))
        self.input = self._input_layer(input_size, n)
        self.gate_input = self._input_layer(input_size, n) if gated else None

    @staticmethod
    def _input_layer(d_input: int, n: int) -> nn.Linear:
        layer = nn.Linear(d_input, n)
        with torch.no_grad():
            layer.weight.normal_(0.0, 1.0 / math.sqrt(d_input))
            layer.bias.zero_()
        return layer

    def antisymmetric(self) -> torch.Tensor:
        """W - Wᵀ (n, n) from its entries above the diagonal."""
        n = self.hidden_size
        upper = self.upper.new_zeros(n, n).index_put((self.upper_rows, self.upper_cols), self.upper)
        return upper - upper.T

    def recurrent_matrix(self) -> torch.Tensor:
        """W - Wᵀ - γ I: eigenvalues i ω - γ."""
        eye = torch.eye(self.hidden_size, dtype=self.upper.dtype, device=self.upper.device)
        return self.antisymmetric() - self.gamma * eye

    def initial_state(self, batch: int) -> torch.Tensor:
        return self.upper.new_zeros(batch, self.hidden_size)

    def _increment(
        self, h: torch.Tensor, drive: torch.Tensor, gate_drive: torch.Tensor | None, A: torch.Tensor
    ) -> torch.Tensor:
        """ε [z ⊙] tanh(A h + drive), A = W - Wᵀ - γ I."""
        recurrent = h @ A.T
        update = torch.tanh(recurrent + drive)
        if gate_drive is not None:
            update = torch.sigmoid(recurrent + gate_drive) * update
        return self.epsilon * update

    def _drives(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.input(x), (self.gate_input(x) if self.gated else None)

    def vector_field(self, state: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """ε h'(h, x): the field in units of one step, so that step = state + this."""
        return self._increment(state, *self._drives(x), self.recurrent_matrix())

    def step(self, x_t: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        return state + self.vector_field(state, x_t)

    def scan(
        self, inputs: torch.Tensor, state0: torch.Tensor, outputs: bool
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """The `step` loop with A formed once and all input (and gate) drives projected at once (batch-major, the
        order the classifier's records were made in)."""
        A = self.recurrent_matrix()
        drives, gate_drives = self._drives(inputs.transpose(0, 1))
        h, hs = state0, []
        for t, drive in enumerate(drives.unbind(1)):
            h = h + self._increment(h, drive, None if gate_drives is None else gate_drives[:, t], A)
            if outputs:
                hs.append(h)
        return (torch.stack(hs) if outputs else None), h


class AntisymmetricRNN(LayerClassifier, AntisymmetricRNNLayer, DynamicalModel):
    """AntisymmetricRNN classifier, plain or gated: the layer (`AntisymmetricRNNLayer`, whose arguments these are,
    d_input its input_size) and logits = Linear(h_T). Takes x (batch, time, d_input)."""

    def __init__(
        self,
        d_input: int,
        n_classes: int,
        hidden_size: int = 128,
        epsilon: float = 0.01,
        gamma: float = 0.1,
        init_scale: float = 1.0,
        gated: bool = False,
    ) -> None:
        super().__init__(d_input, hidden_size, epsilon, gamma, init_scale, gated, batch_first=True)
        self.readout_layer = nn.Linear(hidden_size, n_classes)

    def readout(self, state: torch.Tensor) -> torch.Tensor:
        return self.readout_layer(state)
