"""Stabilized supralinear network (SSN) baselines (docs/protocols.md, 'Stabilized supralinear networks'), in
voltage form:

    tau_i du_i/dt = -u_i + sum_j W_ij r_j + h_i,     firing rate r = k [u]+^n   (n = 2)

with n_E excitatory then n_I inhibitory neurons, tau = tau_E or tau_I per population, and Dale's law on the
columns, W_ij = s_j softplus(theta_ij) with s_j = +1 for an E and -1 for an I presynaptic neuron. One explicit
Euler step of length dt is u <- u + (dt/tau) (-u + W r(u) + h).

The voltage form is the one the MNIST-trained SSN uses (Soo & Lengyel 2022, `wmws2/deeplearningSSN`). Its fixed
points map one to one onto those of the firing-rate form tau dr/dt = -r + k [W r + h]+^n (r = k[u]+^n), and the
input enters linearly, so the state needs no positivity constraint.

Nothing clamps u and no code path guards against non-finite values: a network driven past its stability limit
diverges to inf/NaN and the trainer records it as diverged.

At init W_ij = J_XY / N_Y * U(0.5, 1.5) for postsynaptic population X and presynaptic Y, with the two-population
SSN's J_EE = 1.25, J_EI = 0.65, J_IE = 1.2, J_II = 0.5 (Ahmadian et al. 2013; Hennequin et al. 2018, recalled)
and k = 0.04: a network that settles for drives of order 10 and stays stable far beyond. The input weights start
at U(-1, 1) * input_scale / sqrt(d_input) with bias input_scale, so that h is of that order too.

Time steps: the static SSN uses tau_E = 20 ms, tau_I = 10 ms and dt = 2 ms (dt/tau = 0.1, 0.2), so its 200 steps
are the 0.4 s of settling that Soo & Lengyel simulate; the sequence SSN takes dt/tau_E = 0.02 (the largest
dt/tau_y of the paper-era ORGaNICs runs) and tau_I = tau_E / 2.

`SSNLayer` is the sequence SSN as a recurrent layer (public as `organics_bench.nn.SSNLayer`); `SSN`, the benchmark's
sequence classifier, is that layer plus a linear readout of the E firing rate.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from organics_bench.models.autoencoder import AutoencodedClassifier
from organics_bench.models.base import DynamicalModel, LayerClassifier, LayerSteadyState, RecurrentLayer
from organics_bench.models.ssn_engine import backend, checked_engine, ssn_scan, ssn_settle

COUPLING = {"EE": 1.25, "EI": 0.65, "IE": 1.2, "II": 0.5}  # |J_post,pre| of the two-population SSN
JITTER = 0.5


def ssn_firing_rate(u: torch.Tensor, k: float, power: float) -> torch.Tensor:
    """r = k [u]+^n."""
    return k * F.relu(u).pow(power)


def ssn_drift(u: torch.Tensor, h: torch.Tensor, W: torch.Tensor, k: float, power: float) -> torch.Tensor:
    """tau du/dt = -u + W r(u) + h, the SSN vector field times tau."""
    return -u + ssn_firing_rate(u, k, power) @ W.T + h


class SSNCircuit(nn.Module):
    """The E-I network: Dale's-law weights, per-population dt/tau, firing-rate nonlinearity and input projection."""

    def __init__(
        self,
        d_input: int,
        n_excitatory: int,
        n_inhibitory: int,
        k: float,
        power: float,
        dt_tau_e: float,
        dt_tau_i: float,
        input_scale: float,
    ) -> None:
        super().__init__()
        n_e, n_i = n_excitatory, n_inhibitory
        self.n_excitatory, self.k, self.power = n_e, k, power
        is_e = torch.cat([torch.ones(n_e, dtype=torch.bool), torch.zeros(n_i, dtype=torch.bool)])
        sizes = {"E": n_e, "I": n_i}
        magnitude = torch.cat(
            [
                torch.cat(
                    [
                        COUPLING[post + pre] / sizes[pre] * (1 + JITTER * (2 * torch.rand(sizes[post], sizes[pre]) - 1))
                        for pre in "EI"
                    ],
                    1,
                )
                for post in "EI"
            ]
        )
        self.raw_weights = nn.Parameter(magnitude + torch.log(-torch.expm1(-magnitude)))  # softplus^-1
        self.register_buffer("sign", torch.where(is_e, 1.0, -1.0))
        self.register_buffer("dt_tau", torch.where(is_e, dt_tau_e, dt_tau_i))
        self.input = nn.Linear(d_input, n_e + n_i)
        with torch.no_grad():
            self.input.weight.uniform_(-1.0, 1.0).mul_(input_scale / math.sqrt(d_input))
            self.input.bias.fill_(input_scale)

    @property
    def size(self) -> int:
        return self.sign.numel()

    def weights(self) -> torch.Tensor:
        """W = softplus(theta) * s: columns of E neurons >= 0, of I neurons <= 0."""
        return F.softplus(self.raw_weights) * self.sign

    def drift(self, u: torch.Tensor, h: torch.Tensor, W: torch.Tensor | None = None) -> torch.Tensor:
        """tau du/dt at voltages u (batch, n) and drive h."""
        return ssn_drift(u, h, self.weights() if W is None else W, self.k, self.power)

    def vector_field(self, u: torch.Tensor, h: torch.Tensor, W: torch.Tensor | None = None) -> torch.Tensor:
        """du/dt in units of the Euler step dt: dt/tau * (-u + W r(u) + h)."""
        return self.dt_tau * self.drift(u, h, W)

    def step(self, u: torch.Tensor, h: torch.Tensor, W: torch.Tensor | None = None) -> torch.Tensor:
        """One Euler step: u + dt/tau * (-u + W r(u) + h)."""
        return u + self.vector_field(u, h, W)

    def excitatory_firing_rate(self, u: torch.Tensor) -> torch.Tensor:
        """Firing rate k [u_E]+^n of the E neurons, what the readouts see."""
        return ssn_firing_rate(u[..., : self.n_excitatory], self.k, self.power)


class _ReadsExcitatoryFiringRate:
    """What both SSN classifiers share: a linear readout of the E firing rate and the signed W as recurrent matrix."""

    circuit: SSNCircuit
    readout_layer: nn.Linear

    def rate_readout(self, u: torch.Tensor) -> torch.Tensor:
        """Logits from the E firing rate at voltages u."""
        return self.readout_layer(self.circuit.excitatory_firing_rate(u))

    def recurrent_matrix(self) -> torch.Tensor:
        """The signed recurrent weights W."""
        return self.circuit.weights()

    def engine_backend(self, device: torch.device) -> str:
        """Which form of the SSN engine runs on `device` (`ssn_engine.backend`)."""
        return backend(torch.empty(0, device=device), self.engine)


class SSNState(NamedTuple):
    """The state of an SSN layer: the voltages u (batch, n_E + n_I), E neurons first."""

    u: torch.Tensor


class SSNLayer(RecurrentLayer):
    """The sequence SSN as a recurrent layer (`RecurrentLayer`: torch.nn.LSTM's conventions): h_t = W_in x_t + bias
    drives the network one Euler step per input step; outputs: the firing rates k [u]+^power of all neurons after
    every step, E neurons first (hidden_size = n_E + n_I); state: `SSNState` (u), zero by default. `vector_field` is
    in units of one step.

    Args: input_size; n_excitatory, n_inhibitory; k, power (firing rate k[u]+^power); dt_tau_e, dt_tau_i (dt/tau
    per population, fixed); input_scale (size of the input drive at init); engine ("auto" or "torch", `ssn_engine`;
    the per-step outputs always come from its torch form); batch_first (x and the outputs (batch, time, features)).
    """

    State = SSNState

    def __init__(
        self,
        input_size: int,
        n_excitatory: int = 128,
        n_inhibitory: int = 128,
        k: float = 0.04,
        power: float = 2.0,
        dt_tau_e: float = 0.02,
        dt_tau_i: float = 0.04,
        input_scale: float = 10.0,
        engine: str = "auto",
        batch_first: bool = False,
    ) -> None:
        super().__init__(input_size, n_excitatory + n_inhibitory, batch_first)
        self.engine = checked_engine(engine)
        self.circuit = SSNCircuit(input_size, n_excitatory, n_inhibitory, k, power, dt_tau_e, dt_tau_i, input_scale)

    def initial_state(self, batch: int) -> torch.Tensor:
        return self.circuit.dt_tau.new_zeros(batch, self.circuit.size)

    def vector_field(self, state: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """d u / dt in units of one step, so that step = state + this."""
        return self.circuit.vector_field(state, self.circuit.input(x))

    def step(self, x_t: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        return self.circuit.step(state, self.circuit.input(x_t))

    def scan(
        self, inputs: torch.Tensor, state0: torch.Tensor, outputs: bool
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """The `step` loop's numbers from the sequence engine (`ssn_engine`): weights formed and all input drives
        projected once."""
        c = self.circuit
        voltages, final = ssn_scan(c.input(inputs), state0, c.weights(), c.dt_tau, c.k, c.power, self.engine, outputs)
        return (None if voltages is None else ssn_firing_rate(voltages, c.k, c.power)), final


class SSN(LayerClassifier, SSNLayer, _ReadsExcitatoryFiringRate, DynamicalModel):
    """Sequence SSN classifier: the SSN layer (`SSNLayer`, whose arguments these are, d_input its input_size) from
    u = 0 and a readout linear in the E firing rate at the last step. Takes x (batch, time, d_input).
    """

    def __init__(
        self,
        d_input: int,
        n_classes: int,
        n_excitatory: int = 128,
        n_inhibitory: int = 128,
        k: float = 0.04,
        power: float = 2.0,
        dt_tau_e: float = 0.02,
        dt_tau_i: float = 0.04,
        input_scale: float = 10.0,
        engine: str = "auto",
    ) -> None:
        super().__init__(
            d_input, n_excitatory, n_inhibitory, k, power, dt_tau_e, dt_tau_i, input_scale, engine, batch_first=True
        )
        self.readout_layer = nn.Linear(n_excitatory, n_classes)

    def readout(self, state: torch.Tensor) -> torch.Tensor:
        return self.rate_readout(state)


class SSNStatic(_ReadsExcitatoryFiringRate, AutoencodedClassifier):
    """Static SSN (Table 1): autoencoder code c, constant drive h = W_in c + bias to E and I, `steps` Euler steps
    from u = 0, linear readout of the E firing rate at the last step.

    Args: d_input, n_classes; n_excitatory, n_inhibitory; steps; k, power; dt_tau_e, dt_tau_i; input_scale;
    code_size (the autoencoder's code); engine ("auto" or "torch", `ssn_engine`).
    """

    time_unit_ms = 2.0  # dt, the unit of `SSNCircuit.vector_field` (module docstring: tau_E = 20 ms at dt/tau_E = 0.1)

    def __init__(
        self,
        d_input: int,
        n_classes: int,
        n_excitatory: int = 50,
        n_inhibitory: int = 50,
        steps: int = 200,
        k: float = 0.04,
        power: float = 2.0,
        dt_tau_e: float = 0.1,
        dt_tau_i: float = 0.2,
        input_scale: float = 10.0,
        code_size: int = 40,
        engine: str = "auto",
    ) -> None:
        super().__init__(d_input, code_size)
        self.steps, self.engine = steps, checked_engine(engine)
        self.circuit = SSNCircuit(code_size, n_excitatory, n_inhibitory, k, power, dt_tau_e, dt_tau_i, input_scale)
        self.readout_layer = nn.Linear(n_excitatory, n_classes)

    def settle(self, code: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(u after `steps` Euler steps from 0, drive h, weights W) for a code (batch, code_size)."""
        c = self.circuit
        W, h = c.weights(), c.input(code)
        u = ssn_settle(h, self.steps, torch.zeros_like(h), W, c.dt_tau, c.k, c.power, self.engine)
        return u, h, W

    def classify(self, code: torch.Tensor) -> torch.Tensor:
        return self.rate_readout(self.settle(code)[0])

    def layer_steady_states(self, x: torch.Tensor) -> list[LayerSteadyState]:
        """The network at the voltages u (batch, n_E + n_I) it settles into for inputs x, under its drive h
        (`HasSteadyState`); the residual ||tau du/dt|| tells a settled network from an unsettled one."""
        u, h, W = self.settle(self.encode(x))
        c = self.circuit
        return [LayerSteadyState(u, h, c.drift(u, h, W).norm(dim=-1), c.vector_field, c.size)]
