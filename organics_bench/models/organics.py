"""The discretized gated ORGaNICs cell of Rawat, Heeger & Martiniani (NeurIPS 2024): docs/equations.md,
'Gated sequence cell'.

State per neuron: principal y, modulator a, input gain b (code: B1) and gain b0 on sigma (code: B0).
One explicit-Euler step with time in units of the step (dt = 1), all four updates from the old state:

    y <- y  + dt/tau_y  * (-y  + b * z + (1 - sqrt[a]+) * R(y))
    a <- a  + dt/tau_a  * (-a  + b0^2 sigma^2 + W ([y]+^2 * [a]+))
    b <- b  + dt/tau_b  * (-b  + sigmoid(W_bx x + W_by y + W_ba a))
    b0 <- b0 + dt/tau_b0 * (-b0 + sigmoid(W_b0x x + W_b0y y + W_b0a a))

with z = W_zx x (optionally rectified), W = exp(L) >= 0 and R(y) the recurrence chosen by `recurrence`.

`ORGaNICsLayer` is the cell as a recurrent layer (public as `organics_bench.nn.ORGaNICsLayer`); `Organics`, the
benchmark's classifier, is that layer plus a linear readout.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from organics_bench.equations import initial_log_normalization, normalization_weights
from organics_bench.models import native_ops
from organics_bench.models.base import DynamicalModel, LayerClassifier, RecurrentLayer
from organics_bench.models.organics_engine import backend, organics_scan

RECURRENCES = ("spectral_norm", "identity", "unconstrained")
ENGINES = {"fused": "auto", "native": "native", "stepped": "stepped", "loop": None}  # name -> organics_scan's


class ORGaNICsState(NamedTuple):
    """The state of an ORGaNICs layer, each (batch, hidden_size): principal neurons y, modulators a, input gain b and
    the gain b0 on sigma."""

    y: torch.Tensor
    a: torch.Tensor
    b: torch.Tensor
    b0: torch.Tensor


class ORGaNICsLayer(RecurrentLayer):
    """The ORGaNICs recurrent layer (`RecurrentLayer`: torch.nn.LSTM's conventions); outputs: the principal neurons y
    after every step (hidden_size per step); state: `ORGaNICsState` (y, a, b, b0), by default the fixed initial state
    `state0` drawn at construction (y of unit norm, a and b uniform in [0, 1), b0 = 1).

    Args:
        input_size: input features per step. hidden_size: neurons per population.
        recurrence: how R(y) is formed:
            "spectral_norm" (paper era, default): R(y) = (I + W_r / sigma_max(W_r)) [y]+ with W_r initialised to I,
                so the recurrence is 2I at init, exactly as the paper-era code behaves (docs/reference-code.md,
                'Quirk 2: W_r initialisation is a no-op');
            "identity": R(y) = [y]+ (W_r = I, the case of the stability theorem; n^2 fewer parameters);
            "unconstrained": R(y) = [W_r y]+ with W_r orthogonal at init (the post-paper code).
        rectify_input: z = [W_zx x]+ (post-paper code) instead of z = W_zx x (paper era).
        clamp_normalization: W = clamp(exp(L), 0, 1) (post-paper code) instead of the unbounded exp(L).
        learn_tau: learn dt/tau = max * sigmoid(theta) per neuron; otherwise theta = 1 is frozen.
        dt_tau_max_y, dt_tau_max_a, dt_tau_max_b: the maxima of dt/tau for y, a and both gains.
        engine: how `run_steps` runs the sequence: "fused" (the sequence engine with its own backward through time,
            `organics_engine`, at its fastest here: on the CPU its native time loop where that builds, else the
            steps driven from Python), "native" (the native loop, or a UserError where it cannot be built),
            "stepped" (the engine's steps driven from Python, the reference for the native loop) or "loop"
            (autograd through a per-step loop); all match `step` to rounding. The engines take the gradient of the
            outputs at every step inside their own backward through time.
        batch_first: x and the outputs are (batch, time, features) instead of (time, batch, features).
    """

    State = ORGaNICsState

    def __init__(
        self,
        input_size: int,
        hidden_size: int = 128,
        recurrence: str = "spectral_norm",
        rectify_input: bool = False,
        clamp_normalization: bool = False,
        learn_tau: bool = True,
        dt_tau_max_y: float = 0.02,
        dt_tau_max_a: float = 0.005,
        dt_tau_max_b: float = 0.1,
        engine: str = "fused",
        batch_first: bool = False,
    ) -> None:
        super().__init__(input_size, hidden_size, batch_first)
        if recurrence not in RECURRENCES:
            raise ValueError(f"recurrence must be one of {RECURRENCES}, got {recurrence!r}")
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {tuple(ENGINES)}, got {engine!r}")
        if engine == "native":
            native_ops.require()
        self.engine = engine
        n, m = hidden_size, input_size
        self.recurrence = recurrence
        self.rectify_input = rectify_input
        self.clamp_normalization = clamp_normalization

        self.W_zx = nn.Parameter(_kaiming(n, m))
        with torch.no_grad():  # unit spectral norm at init only, as in the reference code
            self.W_zx /= torch.linalg.matrix_norm(self.W_zx, ord=2)
        self.W_bx, self.W_b0x = nn.Parameter(_kaiming(n, m)), nn.Parameter(_kaiming(n, m))
        self.W_by, self.W_ba = nn.Parameter(_kaiming(n, n)), nn.Parameter(_kaiming(n, n))
        self.W_b0y, self.W_b0a = nn.Parameter(_kaiming(n, n)), nn.Parameter(_kaiming(n, n))
        self.log_W = nn.Parameter(initial_log_normalization(n))
        if recurrence == "spectral_norm":
            self.W_r = nn.Parameter(torch.eye(n))
        elif recurrence == "unconstrained":
            self.W_r = nn.Parameter(nn.init.orthogonal_(torch.empty(n, n)))

        theta = torch.randn(4, n) if learn_tau else torch.ones(4, n)
        self.theta = nn.Parameter(theta, requires_grad=learn_tau)
        self.register_buffer("dt_tau_max", torch.tensor([dt_tau_max_y, dt_tau_max_a, dt_tau_max_b, dt_tau_max_b]))
        self.register_buffer("sigma", torch.ones(n))
        y0 = torch.rand(n)
        self.register_buffer("state0", torch.cat([y0 / y0.norm(), torch.rand(n), torch.rand(n), torch.ones(n)]))

    # ----- parameter transforms -------------------------------------------------------------------
    def rates(self) -> torch.Tensor:
        """dt/tau for (y, a, b, b0), flattened to shape (4n,)."""
        return (self.dt_tau_max[:, None] * torch.sigmoid(self.theta)).reshape(-1)

    def normalization_matrix(self) -> torch.Tensor:
        """W >= 0, the normalization weights."""
        return normalization_weights(self.log_W, self.clamp_normalization)

    def recurrent_matrix(self) -> torch.Tensor:
        """The matrix that multiplies y in the y equation (before rectification for `unconstrained`)."""
        eye = torch.eye(self.hidden_size, device=self.log_W.device, dtype=self.log_W.dtype)
        if self.recurrence == "identity":
            return eye
        if self.recurrence == "spectral_norm":
            return eye + self.W_r / torch.linalg.matrix_norm(self.W_r, ord=2)
        return self.W_r

    def _matrices(self) -> dict[str, torch.Tensor]:
        return {
            "input": torch.cat([self.W_zx, self.W_bx, self.W_b0x]),
            "gate": torch.cat([torch.cat([self.W_by, self.W_ba], 1), torch.cat([self.W_b0y, self.W_b0a], 1)]),
            "recurrent": self.recurrent_matrix(),
            "norm": self.normalization_matrix(),
            "rates": self.rates(),
        }

    # ----- dynamics ---------------------------------------------------------------------------------
    def _drives(self, x: torch.Tensor, mats: dict[str, torch.Tensor]) -> torch.Tensor:
        """Input projections [z, W_bx x, W_b0x x] for any leading shape of x."""
        drives = x @ mats["input"].T
        if self.rectify_input:
            n = self.hidden_size
            drives = torch.cat([F.relu(drives[..., :n]), drives[..., n:]], -1)
        return drives

    def _derivative(self, state: torch.Tensor, drives: torch.Tensor, mats: dict[str, torch.Tensor]) -> torch.Tensor:
        """The bracketed right-hand sides of the four equations (not yet scaled by dt/tau)."""
        n = self.hidden_size
        y, a, b, b0 = state.split(n, -1)
        z, gate_x = drives[..., :n], drives[..., n:]
        y_pos, a_pos = F.relu(y), F.relu(a)
        if self.recurrence == "unconstrained":
            recurrent = F.relu(y @ mats["recurrent"].T)
        else:
            recurrent = y_pos @ mats["recurrent"].T
        dy = -y + b * z + (1.0 - torch.sqrt(a_pos)) * recurrent
        da = -a + (b0 * self.sigma) ** 2 + (y_pos.square() * a_pos) @ mats["norm"].T
        gates = torch.sigmoid(gate_x + torch.cat([y, a], -1) @ mats["gate"].T)
        dgain = gates - torch.cat([b, b0], -1)
        return torch.cat([dy, da, dgain], -1)

    def vector_field(self, state: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """d state / dt of the continuous-time system, time in units of one step (so step = state + this)."""
        mats = self._matrices()
        return mats["rates"] * self._derivative(state, self._drives(x, mats), mats)

    def initial_state(self, batch: int) -> torch.Tensor:
        return self.state0.expand(batch, -1)

    def step(self, x_t: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        return state + self.vector_field(state, x_t)

    def engine_backend(self, device: torch.device) -> str:
        """Which implementation runs the sequence on `device`: "loop" or one of the engine's BACKENDS."""
        if self.engine == "loop":
            return "loop"
        return backend(torch.empty(0, device=device, dtype=self.log_W.dtype), ENGINES[self.engine])

    def scan(
        self, inputs: torch.Tensor, state0: torch.Tensor, outputs: bool
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Same numbers as the per-step loop, with the weight transforms and input projections done once; the steps
        run in the sequence engine (`organics_engine`) unless engine="loop"."""
        mats = self._matrices()
        if self.engine != "loop":
            recurrent = None if self.recurrence == "identity" else mats["recurrent"]
            return organics_scan(
                inputs,
                mats["input"],
                self.rectify_input,
                state0,
                mats["rates"],
                recurrent,
                mats["norm"],
                mats["gate"],
                self.sigma,
                rectify_recurrence=self.recurrence == "unconstrained",
                engine=ENGINES[self.engine],
                outputs=outputs,
            )
        state, ys = state0, []
        # projected batch-major, the order the classifier's records were made in; one unbind: indexing per step
        # would cost O(T^2) backward
        for drive in self._drives(inputs.transpose(0, 1), mats).unbind(1):
            state = state + mats["rates"] * self._derivative(state, drive, mats)
            if outputs:
                ys.append(state[:, : self.hidden_size])
        return (torch.stack(ys) if outputs else None), state


class Organics(LayerClassifier, ORGaNICsLayer, DynamicalModel):
    """ORGaNICs recurrent classifier: the ORGaNICs layer (`ORGaNICsLayer`, whose arguments these are, d_input its
    input_size) and a linear readout of y at the last step. Takes x (batch, time, d_input)."""

    def __init__(
        self,
        d_input: int,
        n_classes: int,
        hidden_size: int = 128,
        recurrence: str = "spectral_norm",
        rectify_input: bool = False,
        clamp_normalization: bool = False,
        learn_tau: bool = True,
        dt_tau_max_y: float = 0.02,
        dt_tau_max_a: float = 0.005,
        dt_tau_max_b: float = 0.1,
        engine: str = "fused",
    ) -> None:
        super().__init__(
            d_input,
            hidden_size,
            recurrence,
            rectify_input,
            clamp_normalization,
            learn_tau,
            dt_tau_max_y,
            dt_tau_max_a,
            dt_tau_max_b,
            engine,
            batch_first=True,
        )
        self.readout_layer = nn.Linear(hidden_size, n_classes)

    def readout(self, state: torch.Tensor) -> torch.Tensor:
        return self.readout_layer(state[..., : self.hidden_size])


def _kaiming(rows: int, cols: int) -> torch.Tensor:
    """nn.Linear's default init, kaiming_uniform(a=sqrt(5)): U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    return nn.init.kaiming_uniform_(torch.empty(rows, cols), a=math.sqrt(5))
