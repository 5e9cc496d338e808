"""The ORGaNICs sequence engine against the plain per-step `step` loop: forward, every gradient, non-finite runs."""

import itertools

import pytest
import torch

from organics_bench.errors import UserError
from organics_bench.models import cpu_kernels, native_ops, organics_engine
from organics_bench.models.base import DynamicalModel
from organics_bench.models.organics import RECURRENCES, Organics

VARIANTS = list(itertools.product(RECURRENCES, [False, True], [False, True], [False, True]))


@pytest.fixture(params=["native", "cpu-kernels", "torch"])
def step_backend(request, monkeypatch) -> str:
    """Run the test with the native time loop and the fused CPU kernels stepped from Python (both built here: CI must
    have C and C++ compilers) and with torch operations (the path CUDA takes)."""
    if request.param != "native":
        monkeypatch.setattr(native_ops, "available", lambda tensor: False)
    if request.param == "torch":
        monkeypatch.setattr(cpu_kernels, "available", lambda tensor: False)
    for dtype in (torch.float32, torch.float64):
        assert organics_engine.backend(torch.zeros(1, 1, 3, dtype=dtype)) == request.param
    return request.param


def perturbed_model(recurrence: str, rectify_input: bool, clamp: bool, learn_tau: bool, n: int = 16) -> Organics:
    """A model moved off its init so every term matters, with fast rates and some negative y and a at t = 0."""
    torch.manual_seed(0)
    m = Organics(
        3, 10, n, recurrence=recurrence, rectify_input=rectify_input, clamp_normalization=clamp, learn_tau=learn_tau
    )
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.3 * torch.randn_like(p))
        m.theta.add_(2.0)  # dt/tau near its maximum: the state moves a lot in few steps
        m.state0[: 2 * n : 3] -= 0.6  # negative y and a exercise the rectifications
    return m


def run_and_grad(m: Organics, x: torch.Tensor, per_step: bool) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Final state, loss and the gradient of every parameter that gets one, for one path through the sequence."""
    m.zero_grad()
    state = DynamicalModel.run_steps(m, x) if per_step else m.run_steps(x)
    loss = (m.readout(state).logsumexp(-1) + 0.1 * state.square().sum(-1)).sum()  # every state component matters
    loss.backward()
    return state.detach(), loss.detach(), {k: p.grad.clone() for k, p in m.named_parameters() if p.grad is not None}


def assert_relative(got: torch.Tensor, expected: torch.Tensor, name: str, tol: float = 1e-5) -> None:
    """Equal to `tol` relative: elementwise rtol, with atol scaled by the tensor's largest entry."""
    torch.testing.assert_close(got, expected, rtol=tol, atol=tol * expected.abs().max().item(), msg=name)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
@pytest.mark.parametrize("recurrence,rectify_input,clamp,learn_tau", VARIANTS)
def test_engine_matches_per_step_forward_and_gradients(
    recurrence, rectify_input, clamp, learn_tau, dtype, tol, step_backend
):
    """float32 as asked; float64 shows the two compute the same function, up to rounding alone. (The float32 loop's
    own error is a few 1e-6 here; with faster dynamics it reaches 1e-5 on log_W, for the loop and engine alike.)"""
    m = perturbed_model(recurrence, rectify_input, clamp, learn_tau).to(dtype)
    assert m.engine == "fused"
    x = torch.randn(5, 40, 3, generator=torch.Generator().manual_seed(1)).to(dtype)
    state_ref, loss_ref, grads_ref = run_and_grad(m, x, per_step=True)
    state, loss, grads = run_and_grad(m, x, per_step=False)
    assert_relative(state, state_ref, "final state", tol)
    assert_relative(loss, loss_ref, "loss", tol)
    expected = {k for k, p in m.named_parameters() if p.requires_grad}
    assert grads.keys() == grads_ref.keys() == expected  # theta, W_r, log_W, ...: every trainable parameter
    for k in grads_ref:
        assert grads_ref[k].abs().max() > 0, k
        assert_relative(grads[k], grads_ref[k], k, tol)
    assert m.state0.grad is None and not m.state0.requires_grad


@pytest.mark.parametrize("recurrence", RECURRENCES)
def test_engine_propagates_non_finite_values_like_the_loop(recurrence, step_backend):
    torch.manual_seed(0)
    m = Organics(3, 10, 8, recurrence=recurrence)
    x = torch.randn(4, 30, 3)
    x[1, 5] = 1e30  # overflows the state of sample 1
    x[2, 7, 0] = float("nan")
    state_ref, loss_ref, grads_ref = run_and_grad(m, x, per_step=True)
    state, loss, grads = run_and_grad(m, x, per_step=False)
    assert not loss_ref.isfinite() and not loss.isfinite()  # what the trainer's divergence check sees
    assert torch.equal(state.isnan(), state_ref.isnan()) and torch.equal(state.isfinite(), state_ref.isfinite())
    assert state[[0, 3]].isfinite().all()
    for k in grads_ref:
        assert torch.equal(grads[k].isnan(), grads_ref[k].isnan()), k
        assert torch.equal(grads[k].isfinite(), grads_ref[k].isfinite()), k


def test_engine_without_grad_and_loop_engine_agree(step_backend):
    m = perturbed_model("spectral_norm", False, False, True)
    x = torch.randn(5, 40, 3)
    with torch.no_grad():
        fused = m.run_steps(x)
        m.engine = "loop"
        loop = m.run_steps(x)
    assert_relative(fused, loop, "no-grad forward")
    assert_relative(fused, DynamicalModel.run_steps(m, x).detach(), "per-step")


def test_engine_repeated_and_interleaved_graphs(step_backend):
    """Buffers are reused across calls: two live graphs, backpropagated in either order, give the same gradients."""
    m = perturbed_model("unconstrained", True, False, True)
    x1, x2 = torch.randn(5, 20, 3), torch.randn(5, 20, 3)
    expected = [run_and_grad(m, x, per_step=True)[2] for x in (x1, x2)]
    m.zero_grad()
    s1, s2 = m.run_steps(x1), m.run_steps(x2)
    for state, ref in ((s2, expected[1]), (s1, expected[0])):
        m.zero_grad()
        (m.readout(state).logsumexp(-1) + 0.1 * state.square().sum(-1)).sum().backward()
        for k, g in ref.items():
            assert_relative(m.get_parameter(k).grad, g, k)


def test_engine_choice_is_validated():
    with pytest.raises(ValueError, match="engine"):
        Organics(1, 10, 8, engine="cuda_graph")


def test_engine_refuses_a_second_backward_through_one_graph():
    m = perturbed_model("identity", False, False, True)
    loss = m.run_steps(torch.randn(2, 5, 3)).sum()
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="retain_graph"):
        loss.backward()


def test_kernels_are_cached_per_machine_and_rebuilt_in_a_fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ORGANICS_BENCH_CACHE", str(tmp_path))
    cpu_kernels.load.cache_clear()
    try:
        assert cpu_kernels.load(torch.float32) is not None and cpu_kernels.load(torch.float64) is not None
        built = sorted(p.name for p in tmp_path.iterdir())
        assert len(built) == 2 and all(name.endswith(".so") for name in built)  # no temporary left behind
    finally:
        cpu_kernels.load.cache_clear()


def test_without_a_compiler_the_engine_says_so_once_and_computes_the_same(tmp_path, monkeypatch):
    m = perturbed_model("spectral_norm", False, False, True)
    x = torch.randn(5, 30, 3)
    expected = run_and_grad(m, x, per_step=True)
    monkeypatch.setenv("ORGANICS_BENCH_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    cpu_kernels.load.cache_clear()
    native_ops.reset()
    try:
        with pytest.warns(RuntimeWarning) as said:
            assert organics_engine.backend(x) == "torch"
            assert organics_engine.backend(x) == "torch"  # said once, not per call
        state, loss, grads = run_and_grad(m, x, per_step=False)
        with pytest.raises(UserError, match="native ORGaNICs engine cannot be built here .*no C\\+\\+ compiler"):
            Organics(1, 10, 4, engine="native")
    finally:
        cpu_kernels.load.cache_clear()
        native_ops.reset()
    messages = [str(w.message) for w in said]
    assert len(messages) == 2
    assert "native time loop unavailable (no C++ compiler found (set CXX)); using the per-step C kernels" in messages[0]
    assert "fused CPU kernels unavailable" in messages[1] and "using torch operations" in messages[1]
    assert_relative(state, expected[0], "final state")
    for k, g in expected[2].items():
        assert_relative(grads[k], g, k)


def test_a_failed_native_build_is_one_warning_and_the_stepped_engine(tmp_path, monkeypatch):
    """A compiler error (here an unknown flag) leaves no traceback: one warning line, the Python-stepped C kernels."""
    monkeypatch.setenv("ORGANICS_BENCH_CACHE", str(tmp_path))
    monkeypatch.setattr(native_ops, "FLAGS", [*native_ops.FLAGS, "-fno-such-flag-anywhere"])
    native_ops.reset()
    try:
        with pytest.warns(RuntimeWarning, match="native time loop unavailable .*no-such-flag-anywhere") as said:
            assert organics_engine.backend(torch.zeros(2, 3)) == "cpu-kernels"
    finally:
        native_ops.reset()
    assert len(said) == 1 and len(str(said[0].message).splitlines()) == 1


def test_the_native_loop_checks_its_tensors_before_reading_them():
    """Non-contiguous or mixed-dtype tensors reach the native loop only after a check that says which rule failed."""
    batch, n, steps, m = 3, 4, 5, 2
    inputs, input_weights, states, h = (
        torch.zeros(steps, batch, m),
        torch.zeros(3 * n, m),
        torch.zeros(steps + 1, batch, 4 * n),
        torch.zeros(steps, batch, 4 * n),
    )
    rates, sigma, norm, gate = torch.full((4 * n,), 0.1), torch.ones(n), torch.eye(n), torch.zeros(2 * n, 2 * n)
    native_ops.require()

    def native(*args):
        return torch.ops.organics_native.forward(inputs, *args, False, False)

    with pytest.raises(RuntimeError, match="contiguous, on the CPU and of dtype"):
        native(input_weights, False, states, h, None, rates, None, torch.randn(n, n).T, gate, sigma)
    with pytest.raises(RuntimeError, match="contiguous, on the CPU and of dtype"):
        native(input_weights, False, states, h, None, rates.double(), None, norm, gate, sigma)
    with pytest.raises(RuntimeError, match="contiguous, on the CPU and of dtype"):
        native(torch.zeros(m, 3 * n).T, False, states, h, None, rates, None, norm, gate, sigma)
    with pytest.raises(RuntimeError, match="recs and recurrent must be given together"):
        native(input_weights, False, states, h, None, rates, norm, norm, gate, sigma)
    native(input_weights, False, states, h, None, rates, None, norm, gate, sigma)
    assert states[-1].isfinite().all()


@pytest.mark.parametrize("rectify_input", [False, True])
def test_engine_gradient_reaches_the_inputs(rectify_input, step_backend):
    m = perturbed_model("spectral_norm", rectify_input, False, True).double()
    x = torch.randn(4, 25, 3, dtype=torch.float64)
    grads = []
    for run in (lambda v: DynamicalModel.run_steps(m, v), m.run_steps):
        v = x.clone().requires_grad_()
        run(v).square().sum().backward()
        grads.append(v.grad)
    assert grads[0].abs().max() > 0
    assert_relative(grads[1], grads[0], "dL/dx", 1e-10)


@pytest.mark.parametrize("n,batch,steps", [(5, 1, 1), (33, 3, 4)])
def test_engine_on_sizes_that_are_no_multiple_of_a_vector_width(n, batch, steps, step_backend):
    torch.manual_seed(0)
    for recurrence in RECURRENCES:
        m = Organics(3, 10, n, recurrence=recurrence).double()
        with torch.no_grad():
            m.state0[::3] -= 0.5
        x = torch.randn(batch, steps, 3, dtype=torch.float64)
        state_ref, loss_ref, grads_ref = run_and_grad(m, x, per_step=True)
        state, loss, grads = run_and_grad(m, x, per_step=False)
        assert_relative(state, state_ref, f"{recurrence} state", 1e-10)
        for k in grads_ref:
            assert_relative(grads[k], grads_ref[k], f"{recurrence} {k}", 1e-10)
