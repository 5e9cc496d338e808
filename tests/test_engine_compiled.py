"""The CUDA path of the ORGaNICs and SSN engines, their torch steps compiled with torch.compile, against the per-step
loop to 1e-5 (float32). On the CPU the compiled steps are forced (inductor's C++ backend compiles the same graphs
Triton compiles on CUDA); where CUDA is present, the tests also run there with the engines' own choice of steps."""

import pytest
import torch

from organics_bench.models import organics_engine, ssn_engine
from organics_bench.models.base import DynamicalModel
from organics_bench.models.organics import RECURRENCES
from organics_bench.models.ssn import SSN
from tests.test_engine import assert_relative, perturbed_model, run_and_grad
from tests.test_ssn_engine import loss_and_grads

DEVICES = ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


def compiled_graphs() -> int:
    return torch._dynamo.utils.counters["stats"]["unique_graphs"]


@pytest.fixture(params=DEVICES)
def device(request, monkeypatch) -> str:
    """The engines as they run on CUDA: every step through their `compiled_steps`."""
    if request.param == "cpu":
        monkeypatch.setattr(organics_engine, "backend", lambda tensor, engine="auto": "compiled")
        monkeypatch.setattr(ssn_engine, "backend", lambda tensor, engine: "compiled")
    else:
        assert organics_engine.backend(torch.zeros(1, device="cuda")) == "compiled"
        assert ssn_engine.backend(torch.zeros(1, device="cuda")) == "compiled"
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    return request.param


def assert_same_gradients(grads: dict, grads_ref: dict, expected: set[str]) -> None:
    assert grads.keys() == grads_ref.keys() == expected
    for k in grads_ref:
        assert grads_ref[k].abs().max() > 0, k
        assert_relative(grads[k], grads_ref[k], k)


@pytest.mark.parametrize("recurrence", RECURRENCES)
def test_compiled_steps_match_per_step_forward_and_gradients(recurrence, device):
    m = perturbed_model(recurrence, rectify_input=recurrence == "identity", clamp=False, learn_tau=True).to(device)
    x = torch.randn(5, 40, 3, generator=torch.Generator().manual_seed(1)).to(device)
    state_ref, loss_ref, grads_ref = run_and_grad(m, x, per_step=True)
    state, loss, grads = run_and_grad(m, x, per_step=False)
    assert_relative(state, state_ref, "final state")
    assert_relative(loss, loss_ref, "loss")
    assert_same_gradients(grads, grads_ref, {k for k, p in m.named_parameters() if p.requires_grad})
    assert compiled_graphs() == 2  # the forward and the backward step, each one graph without breaks


@pytest.mark.parametrize("power", [2.0, 1.0])
def test_compiled_ssn_steps_match_per_step_forward_and_gradients(power, device):
    torch.manual_seed(0)
    m = SSN(3, 10, n_excitatory=12, n_inhibitory=8, power=power, dt_tau_e=0.1, dt_tau_i=0.2).to(device)
    with torch.no_grad():
        m.circuit.input.bias.zero_()  # drives of both signs: some voltages stay below zero, so [u]+ masks matter
    x = torch.randn(6, 60, 3).to(device)
    ref, grads_ref = loss_and_grads(m, lambda: m.readout(DynamicalModel.run_steps(m, x)))
    got, grads = loss_and_grads(m, lambda: m.readout(m.run_steps(x)))
    assert_relative(got, ref, "output")
    assert_same_gradients(grads, grads_ref, {k for k, _ in m.named_parameters()})
    assert compiled_graphs() == 2


def test_backends_compile_on_cuda_only(monkeypatch):
    """CPU tensors take the native loop or the C kernels, or torch steps without a compiler; only CUDA tensors take
    compiled steps."""
    assert organics_engine.backend(torch.zeros(1)) == "native"
    assert organics_engine.backend(torch.zeros(1), "stepped") == "cpu-kernels"
    assert ssn_engine.backend(torch.zeros(1)) == "cpu-kernels"
    monkeypatch.setattr(organics_engine.native_ops, "available", lambda *args: False)
    assert organics_engine.backend(torch.zeros(1)) == "cpu-kernels"
    monkeypatch.setattr(organics_engine.cpu_kernels, "available", lambda *args: False)
    assert organics_engine.backend(torch.zeros(1)) == "torch"
    assert ssn_engine.backend(torch.zeros(1)) == "torch"
    assert organics_engine.step_functions("compiled", torch.float32) is organics_engine.compiled_steps()
    assert isinstance(organics_engine.step_functions("cpu-kernels", torch.float32), organics_engine._KernelSteps)
