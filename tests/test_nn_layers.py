"""The recurrent layers of `organics_bench.nn` against their own `step` loop (outputs per step, final state and every
gradient, through the outputs and through the final state, with and without an initial state, batch-first or not),
and the benchmark's classifiers, now these layers plus a readout, against numbers recorded before they were."""

import importlib.util
from pathlib import Path

import pytest
import torch

from organics_bench.models import cpu_kernels, organics_engine
from organics_bench.nn import (
    AntisymmetricRNNLayer,
    CoRNNLayer,
    LipschitzRNNLayer,
    ORGaNICsLayer,
    ORGaNICsState,
    RecurrentLayer,
    SSNLayer,
)
from tests.test_engine import step_backend  # noqa: F401 (a fixture: native, cpu-kernels and torch steps)

T, BATCH, M = 7, 3, 2
THROUGH = ("outputs", "final", "both")
RIVALS = {  # name: (layer class, settings), each with steps large enough that every term matters in 7 steps
    "cornn": (CoRNNLayer, {"hidden_size": 5, "dt": 0.3}),
    "cornn_implicit": (CoRNNLayer, {"hidden_size": 5, "dt": 0.3, "damping": "implicit"}),
    "lipschitz_rnn": (LipschitzRNNLayer, {"hidden_size": 5, "epsilon": 0.3, "init_std": 2.0}),
    "lipschitz_rnn_rk2": (LipschitzRNNLayer, {"hidden_size": 5, "epsilon": 0.3, "init_std": 2.0, "scheme": "rk2"}),
    "antisymmetric_rnn": (AntisymmetricRNNLayer, {"hidden_size": 5, "epsilon": 0.3}),
    "antisymmetric_rnn_gated": (AntisymmetricRNNLayer, {"hidden_size": 5, "epsilon": 0.3, "gated": True}),
    "ssn": (SSNLayer, {"n_excitatory": 4, "n_inhibitory": 3, "dt_tau_e": 0.2, "dt_tau_i": 0.4, "input_scale": 2.0}),
    "ssn_torch": (SSNLayer, {"n_excitatory": 4, "n_inhibitory": 3, "dt_tau_e": 0.2, "engine": "torch"}),
    "organics_loop": (ORGaNICsLayer, {"hidden_size": 5, "engine": "loop"}),
}
ORGANICS_VARIANTS = [("spectral_norm", False), ("identity", True), ("unconstrained", True)]


def step_output(layer: RecurrentLayer, state: torch.Tensor) -> torch.Tensor:
    """What each layer documents as its output, computed from a flat state."""
    if isinstance(layer, SSNLayer):
        return layer.circuit.k * state.relu().pow(layer.circuit.power)
    return state[:, : layer.hidden_size]  # ORGaNICs and coRNN: y; the others: h


def organics_layer(recurrence: str, rectify_input: bool, engine: str = "fused") -> ORGaNICsLayer:
    """A float64 layer moved off its init, with fast rates, so every term and rectification matters in 7 steps."""
    torch.manual_seed(0)
    layer = ORGaNICsLayer(M, 5, recurrence=recurrence, rectify_input=rectify_input, engine=engine).double()
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.3 * torch.randn_like(p))
        layer.theta.add_(2.0)
    return layer


def rival_layer(name: str) -> RecurrentLayer:
    torch.manual_seed(0)
    cls, settings = RIVALS[name]
    return cls(M, **settings).double()


def random_state(layer: RecurrentLayer, generator: torch.Generator) -> torch.Tensor:
    """A flat initial state with entries of both signs (ORGaNICs: negative y and a exercise the rectifications)."""
    size = layer.initial_state(1).shape[1]
    return torch.randn(BATCH, size, generator=generator, dtype=torch.float64)


def assert_relative(got: torch.Tensor, expected: torch.Tensor, name: str, tol: float = 1e-10) -> None:
    torch.testing.assert_close(got, expected, rtol=tol, atol=tol * expected.abs().max().item(), msg=name)


def check_against_step_loop(layer: RecurrentLayer, batch_first: bool, with_state: bool, through: str) -> None:
    """Forward and every gradient (parameters, x, the initial state) of `layer(x, state)` against the `step` loop,
    for a loss through the per-step outputs, the final state, or both."""
    layer.batch_first = batch_first
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(T, BATCH, M, generator=generator, dtype=torch.float64)
    state0 = random_state(layer, generator) if with_state else layer.initial_state(BATCH).detach().clone()
    weights_out = torch.randn(T, BATCH, step_output(layer, state0).shape[1], generator=generator, dtype=torch.float64)
    weights_final = torch.randn(*state0.shape, generator=generator, dtype=torch.float64)

    def loss(outputs: torch.Tensor, final: torch.Tensor) -> torch.Tensor:
        terms = []
        if through in ("outputs", "both"):
            terms.append((weights_out * outputs.tanh()).sum())  # nonlinear: the gradient differs per step and entry
        if through in ("final", "both"):
            terms.append((weights_final * final.tanh()).sum())
        return sum(terms)

    def grads(run) -> tuple[torch.Tensor, torch.Tensor, dict]:
        layer.zero_grad()
        xs, s0 = x.clone().requires_grad_(), state0.clone().requires_grad_(with_state)
        outputs, final = run(xs, s0)
        loss(outputs, final).backward()
        got = {k: p.grad.clone() for k, p in layer.named_parameters() if p.grad is not None} | {"x": xs.grad}
        return outputs.detach(), final.detach(), got | ({"state0": s0.grad} if with_state else {})

    def step_loop(xs, s0):
        state, outputs = s0, []
        for x_t in xs:
            state = layer.step(x_t, state)
            outputs.append(step_output(layer, state))
        return torch.stack(outputs), state

    def layer_call(xs, s0):
        fields = len(layer.State._fields)
        outputs, final = layer(
            xs.transpose(0, 1) if batch_first else xs, layer.State(*s0.chunk(fields, -1)) if with_state else None
        )
        assert type(final) is layer.State and all(f.shape == (BATCH, s0.shape[1] // fields) for f in final)
        return (outputs.transpose(0, 1) if batch_first else outputs), torch.cat(tuple(final), -1)

    out_ref, final_ref, grads_ref = grads(step_loop)
    out, final, got = grads(layer_call)
    assert_relative(out, out_ref, "outputs")
    assert_relative(final, final_ref, "final state")
    expected = (
        {k for k, p in layer.named_parameters() if p.requires_grad} | {"x"} | ({"state0"} if with_state else set())
    )
    assert got.keys() == grads_ref.keys() == expected
    for k in grads_ref:
        assert grads_ref[k].abs().max() > 0, k  # every gradient is exercised
        assert_relative(got[k], grads_ref[k], k)


@pytest.mark.parametrize("through", THROUGH)
@pytest.mark.parametrize("with_state", [False, True])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("recurrence,rectify_input", ORGANICS_VARIANTS)
@pytest.mark.usefixtures("step_backend")
def test_organics_layer_matches_its_step_loop(recurrence, rectify_input, batch_first, with_state, through):
    check_against_step_loop(organics_layer(recurrence, rectify_input), batch_first, with_state, through)


@pytest.mark.parametrize("through", THROUGH)
@pytest.mark.parametrize("with_state", [False, True])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("name", list(RIVALS))
def test_layer_matches_its_step_loop(name, batch_first, with_state, through):
    check_against_step_loop(rival_layer(name), batch_first, with_state, through)


@pytest.mark.parametrize("recurrence,rectify_input", ORGANICS_VARIANTS)
@pytest.mark.usefixtures("step_backend")
def test_organics_outputs_without_grad_match_the_step_loop(recurrence, rectify_input, monkeypatch):
    """The no-grad forward keeps y per step: natively in chunks of steps (here 3: chunks of 3, 3 and 1 steps)."""
    monkeypatch.setattr(organics_engine, "_CHUNK", 3)
    layer = organics_layer(recurrence, rectify_input)
    x = torch.randn(T, BATCH, M, dtype=torch.float64)
    state = layer.State(*random_state(layer, torch.Generator().manual_seed(2)).chunk(4, -1))
    with torch.no_grad():
        outputs, final = layer(x, state)
        flat, expected = torch.cat(state, -1), []
        for x_t in x:
            flat = layer.step(x_t, flat)
            expected.append(flat[:, :5])
    assert_relative(outputs, torch.stack(expected), "outputs")
    assert_relative(torch.cat(final, -1), flat, "final state")


@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.usefixtures("step_backend")
def test_outputs_are_not_overwritten_by_a_later_call(grad):
    """The engine's workspaces are pooled and reused: the outputs handed out are the caller's own memory."""
    layer = organics_layer("spectral_norm", False)
    x1, x2 = torch.randn(T, BATCH, M, dtype=torch.float64), torch.randn(T, BATCH, M, dtype=torch.float64)
    with torch.set_grad_enabled(grad):
        outputs, final = layer(x1)
        kept = outputs.detach().clone(), torch.cat(final, -1).detach().clone()
        if grad:
            outputs.sum().backward()  # returns the forward's workspace to the pool
        for _ in range(2):
            later, _ = layer(x2)
            if grad:
                later.sum().backward()
    assert torch.equal(outputs.detach(), kept[0]) and torch.equal(torch.cat(final, -1).detach(), kept[1])


def test_layer_conventions():
    """Batch-first shapes, the default initial state (ORGaNICs: its `state0` buffer), a named final state."""
    layer = ORGaNICsLayer(M, 5, batch_first=True)
    x = torch.randn(BATCH, T, M)
    outputs, state = layer(x)
    assert outputs.shape == (BATCH, T, 5) and isinstance(state, ORGaNICsState) and state.y.shape == (BATCH, 5)
    assert torch.equal(state.b0, torch.cat(state, -1)[:, 15:])
    explicit = ORGaNICsState(*layer.state0.expand(BATCH, -1).chunk(4, -1))
    assert torch.equal(layer(x, explicit)[0], outputs)
    with pytest.raises(ValueError, match="3 dims"):
        layer(torch.randn(T, M))
    with pytest.raises(TypeError, match="ORGaNICsState"):
        layer(x, torch.cat(state, -1))
    assert SSNLayer(M, 4, 3).hidden_size == 7  # outputs all 7 firing rates


# ----- the classifiers: these layers plus a readout, unchanged --------------------------------------------------------
REFERENCE = Path(__file__).parent / "data" / "classifier_reference.pt"
_spec = importlib.util.spec_from_file_location(
    "make_classifier_reference", REFERENCE.with_name("make_classifier_reference.py")
)
make_reference = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_reference)


@pytest.mark.parametrize("name", list(make_reference.CASES))
def test_classifier_is_unchanged(name):
    """Parameters and buffers at seed 0, state-dict keys (old checkpoints load strictly), logits, final state and
    every gradient against tests/data/classifier_reference.pt, made by tests/data/make_classifier_reference.py on the
    code before the layers existed: bit-identical on the CPU it was made on, to float32 rounding on another (the
    native engine is compiled for each CPU's own instruction set)."""
    expected = torch.load(REFERENCE, weights_only=True)
    cls, settings = make_reference.CASES[name]
    got = make_reference.reference(cls, settings)
    ref = expected[name]
    assert list(got["state_dict"]) == list(ref["state_dict"]) and list(got["grads"]) == list(ref["grads"])
    for k, v in ref["state_dict"].items():
        assert torch.equal(got["state_dict"][k], v), k
    torch.manual_seed(1)
    cls(make_reference.D_INPUT, make_reference.N_CLASSES, **settings).load_state_dict(ref["state_dict"])
    same_cpu = expected["cpu"] == cpu_kernels.cpu_description()
    pairs = [(got[k], ref[k], k) for k in ("logits", "final_state")] + [
        (got["grads"][k], ref["grads"][k], k) for k in ref["grads"]
    ]
    for value, reference, key in pairs:
        if same_cpu:
            assert torch.equal(value, reference), key
        else:
            assert_relative(value, reference, key, tol=1e-5)
