"""The model contracts that the trainer and the diagnostics are written against: the base classes a model derives
from (what it is) and the protocols it may satisfy (what else it offers)."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn


class Classifier(nn.Module):
    """Any model the trainer can train: `forward(x) -> logits` and a training loss.

    `kind` says which tasks it takes: "sequence" (x: batch, time, d_input) or "static" (x: batch, *input_shape).
    """

    kind = "sequence"

    def loss(
        self, x: torch.Tensor, y: torch.Tensor, criterion: Callable[..., torch.Tensor] = F.cross_entropy
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(training loss, outputs): the task's `criterion` (cross-entropy unless the task says otherwise), plus any
        terms a model adds (e.g. an autoencoder's reconstruction)."""
        logits = self(x)
        return criterion(logits, y), logits

    def recurrent_matrix(self) -> torch.Tensor | None:
        """The effective recurrent weight matrix whose spectrum is logged each epoch, if the model has one."""
        return None


class DynamicalModel(Classifier):
    """A recurrent classifier whose state is one tensor of shape (batch, state_size).

    Subclasses implement `initial_state`, `step` and `readout`; `forward` runs the plain per-step loop, and a
    subclass may override `run_steps` with a faster path that is tested to match it.
    """

    kind = "sequence"

    def initial_state(self, batch: int) -> torch.Tensor:
        raise NotImplementedError

    def step(self, x_t: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """One time step: x_t (batch, d_input), state (batch, state_size) -> next state."""
        raise NotImplementedError

    def readout(self, state: torch.Tensor) -> torch.Tensor:
        """Class logits (batch, n_classes) from a state."""
        raise NotImplementedError

    def run_steps(self, x: torch.Tensor) -> torch.Tensor:
        """Final state after feeding x (batch, time, d_input) one `step` at a time."""
        state = self.initial_state(x.shape[0])
        for t in range(x.shape[1]):
            state = self.step(x[:, t], state)
        return state

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.readout(self.run_steps(x))


class RecurrentLayer(nn.Module):
    """A recurrent layer with `torch.nn.LSTM`'s conventions, and the cell that the benchmark's classifier of the same
    model adds a readout to.

    `forward(x, state=None) -> (outputs, final_state)`: x is (time, batch, input_size), or (batch, time, input_size)
    with `batch_first`; outputs are the layer's outputs after every step, in x's layout (what a cell outputs is said
    by its class); `state` and `final_state` are the cell's `State`, a NamedTuple of (batch, size) tensors, and a
    missing `state` is the cell's own initial state. Subclasses set `State` and implement `initial_state`, `step`
    (the reference: one step on the flat state, the fields of `State` concatenated) and `scan` (all steps at once,
    tested to match the `step` loop).
    """

    State: type[tuple]

    def __init__(self, input_size: int, hidden_size: int, batch_first: bool) -> None:
        super().__init__()
        self.input_size, self.hidden_size, self.batch_first = input_size, hidden_size, batch_first

    def initial_state(self, batch: int) -> torch.Tensor:
        """The flat initial state (batch, state_size)."""
        raise NotImplementedError

    def step(self, x_t: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """One time step: x_t (batch, input_size), flat state (batch, state_size) -> next flat state."""
        raise NotImplementedError

    def scan(
        self, inputs: torch.Tensor, state0: torch.Tensor, outputs: bool
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """(the outputs of every step (time, batch, ...) if `outputs`, else None; the final flat state) for inputs
        (time, batch, input_size) from the flat state state0 (batch, state_size)."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor, state: tuple | None = None) -> tuple[torch.Tensor, tuple]:
        if x.dim() != 3:
            raise ValueError(f"{type(self).__name__} takes a batched sequence (3 dims), got shape {tuple(x.shape)}")
        if isinstance(state, torch.Tensor):
            raise TypeError(f"{type(self).__name__}: pass the state as its {self.State.__name__}, not one tensor")
        inputs = x.transpose(0, 1) if self.batch_first else x
        state0 = self.initial_state(inputs.shape[1]) if state is None else torch.cat(tuple(state), -1)
        outputs, final = self.scan(inputs, state0, outputs=True)
        final_state = self.State(*final.chunk(len(self.State._fields), -1))
        return (outputs.transpose(0, 1) if self.batch_first else outputs), final_state

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}" + (", batch_first=True" if self.batch_first else "")


class LayerClassifier:
    """What makes a `RecurrentLayer` plus a readout a `DynamicalModel`, listed first among a classifier's bases (before
    the layer, then `DynamicalModel`; the classifier adds `readout`): x is (batch, time, d_input), `run_steps` is the
    layer's `scan` from its initial state without per-step outputs, and `forward` the readout of that state."""

    def run_steps(self, x: torch.Tensor) -> torch.Tensor:
        return self.scan(x.transpose(0, 1), self.initial_state(x.shape[0]), outputs=False)[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.readout(self.run_steps(x))


class StaticModel(Classifier):
    """A classifier of static inputs; one whose forward computes fixed points of circuits is a `HasSteadyState`."""

    kind = "static"


@runtime_checkable
class HasVectorField(Protocol):
    """A continuous-time system: `vector_field(state, x)` is d state/dt (batch, d) at states (batch, d) under the
    inputs x (batch, ...), in the system's unit of time. For a sequence model that unit is one step and its Euler
    step is state + vector_field, so its stability is Re(lambda) < 0 of the field's Jacobian; a `DynamicalModel`
    without one is judged by its step map (|lambda| < 1)."""

    def vector_field(self, state: torch.Tensor, x: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class HasEngine(Protocol):
    """A model with more than one implementation of its forward and backward (engines tested to give the same
    numbers): `engine_backend(device)` names the one that runs on `device`, for the run's record and checkpoints."""

    def engine_backend(self, device: torch.device) -> str: ...


def engine_backend(model: nn.Module, device: torch.device) -> str:
    """What computes `model` on `device`: its own engine's name (`HasEngine`), else "torch" (autograd)."""
    return model.engine_backend(device) if isinstance(model, HasEngine) else "torch"


class LayerSteadyState(NamedTuple):
    """One layer (circuit) of a `HasSteadyState` model at the fixed point its forward computes, per input.

    state: (batch, d) the fixed point; drive: (batch, ...) the layer's constant input; vector_field(state, drive):
    d state/dt (batch, d) in the model's `time_unit_ms`; residual: (batch,) the norm of the time-constant-weighted
    right-hand side tau * d state/dt there, zero at an exact fixed point; units: the layer's size as its model
    counts it (ORGaNICs: n, for n y and n a neurons; SSN: n_E + n_I neurons).
    """

    state: torch.Tensor
    drive: torch.Tensor
    residual: torch.Tensor
    vector_field: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    units: int


@runtime_checkable
class HasSteadyState(Protocol):
    """A static model whose forward passes through steady states of continuous-time circuits: fixed-point layers
    solved for directly (ORGaNICs) or a network settled by simulation (static SSN).

    `layer_steady_states(x)`: every layer's `LayerSteadyState` for inputs x, first layer first, at the state the
    forward uses. `time_unit_ms`: the length in ms of the unit of time of the layers' vector fields, so that their
    Jacobians' eigenvalues convert to 1/ms; a steady state is stable iff every Re(lambda) < 0.
    """

    time_unit_ms: float

    def layer_steady_states(self, x: torch.Tensor) -> list[LayerSteadyState]: ...


def count_trainable(model: nn.Module) -> int:
    """Number of trainable scalar parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
