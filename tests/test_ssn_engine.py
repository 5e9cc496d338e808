"""The SSN engine against the per-step `step` loop, and its fused CPU kernels against the torch form (the engine as
it was before them): forward, every gradient, constant drives, sizes off the vector width, divergence."""

import pytest
import torch

from organics_bench.models import ssn_engine, ssn_fused
from organics_bench.models.base import DynamicalModel
from organics_bench.models.ssn import SSN, SSNStatic
from tests.helpers import read_metrics, run_in_process, smoke_overrides


@pytest.fixture(params=["auto", "torch"])
def engine(request) -> str:
    """Both forms; "auto" must be the fused kernels here (built on the spot: CI must have a C compiler)."""
    expected = "cpu-kernels" if request.param == "auto" else "torch"
    for dtype in (torch.float32, torch.float64):
        assert ssn_engine.backend(torch.zeros(1, dtype=dtype), request.param) == expected
    return request.param


def assert_relative(got: torch.Tensor, expected: torch.Tensor, name: str, tol: float) -> None:
    torch.testing.assert_close(got, expected, rtol=tol, atol=tol * expected.abs().max().item(), msg=name)


def loss_and_grads(model, run):
    model.zero_grad()
    out = run()
    loss = out.square().mean() + out.sum()
    loss.backward()
    return out.detach(), {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}


def assert_same_run(model, run, engines, tol):
    """Output and every parameter's gradient of `run` agree between the two engines, and every gradient is used."""
    (ref, grads_ref), (got, grads) = [loss_and_grads(model, lambda e=e: run(e)) for e in engines]
    assert_relative(got, ref, "output", tol)
    assert grads.keys() == grads_ref.keys() == {k for k, _ in model.named_parameters()}
    for k, g in grads_ref.items():
        assert g.abs().max() > 0, k
        assert_relative(grads[k], g, k, tol)


def perturbed(model):
    """Off its init, with the input bias removed: drives of both signs, so some voltages stay below zero."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
        model.circuit.input.bias.zero_()
    return model


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
@pytest.mark.parametrize("power", [2.0, 1.0, 3.0])
def test_sequence_engine_matches_per_step_loop(dtype, tol, power, engine):
    torch.manual_seed(0)
    m = SSN(3, 10, n_excitatory=12, n_inhibitory=8, power=power, dt_tau_e=0.1, dt_tau_i=0.2, engine=engine).to(dtype)
    with torch.no_grad():
        m.circuit.input.bias.zero_()  # drives of both signs: some voltages stay below zero, so [u]+ masks matter
    x = torch.randn(6, 60, 3, dtype=dtype)
    ref, grads_ref = loss_and_grads(m, lambda: m.readout(DynamicalModel.run_steps(m, x)))
    got, grads = loss_and_grads(m, lambda: m.readout(m.run_steps(x)))
    state = m.run_steps(x).detach()
    assert (state < 0).any() and (state > 0).any()
    assert_relative(got, ref, "logits", tol)
    assert grads.keys() == grads_ref.keys() == {k for k, _ in m.named_parameters()}
    for k, g in grads_ref.items():
        assert g.abs().max() > 0, k
        assert_relative(grads[k], g, k, tol)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_static_engine_matches_per_step_loop(dtype, tol, engine):
    torch.manual_seed(1)
    m = SSNStatic(784, 10, n_excitatory=10, n_inhibitory=10, steps=50, code_size=8, engine=engine).to(dtype)
    images = torch.rand(4, 784, dtype=dtype)

    def loop():
        c = m.circuit
        u = torch.zeros(4, c.size, dtype=dtype)
        h, W = c.input(m.encode(images)), c.weights()
        for _ in range(m.steps):
            u = c.step(u, h, W)
        return m.rate_readout(u)

    ref, grads_ref = loss_and_grads(m, loop)
    got, grads = loss_and_grads(m, lambda: m.classify(m.encode(images)))
    assert_relative(got, ref, "logits", tol)
    assert grads.keys() == grads_ref.keys()
    for k, g in grads_ref.items():
        assert_relative(grads[k], g, k, tol)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
@pytest.mark.parametrize("sizes", [(50, 50), (80, 20), (13, 7), (1, 2)])
def test_fused_static_ssn_equals_the_torch_form(dtype, tol, sizes):
    """The Table 1 model, 200 steps, a batch of 29 (no multiple of the kernels' row blocks), neuron counts on and
    off the vector width: logits and every gradient, autoencoder included, as the torch form gives them."""
    torch.manual_seed(2)
    m = perturbed(SSNStatic(784, 10, *sizes)).to(dtype)
    images = torch.rand(29, 784, dtype=dtype)
    u = m.settle(m.encode(images))[0]
    assert (u < 0).any() and (u > 0).any()

    labels = torch.randint(0, 10, (29,))

    def run(engine):  # the training loss (cross-entropy + reconstruction) next to the logits
        m.engine = engine
        loss, logits = m.loss(images, labels)
        return torch.cat([loss[None], logits.flatten()])

    assert_same_run(m, run, ("torch", "auto"), tol)
    with torch.no_grad():
        m.engine = "torch"
        ref = m(images)
        m.engine = "auto"
        assert_relative(m(images), ref, "logits without grad", tol)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
@pytest.mark.parametrize("power", [2.0, 1.0, 3.0])
def test_fused_sequence_ssn_equals_the_torch_form(dtype, tol, power):
    torch.manual_seed(3)
    m = perturbed(SSN(3, 10, 13, 7, power=power, dt_tau_e=0.1, dt_tau_i=0.2)).to(dtype)
    x = torch.randn(29, 70, 3, dtype=dtype)

    def run(engine):
        m.engine = engine
        return m.readout(m.run_steps(x))

    assert_same_run(m, run, ("torch", "auto"), tol)


def unstable_drives(dtype):
    """Excitatory W and drives growing along the batch: the first rows settle, the later ones run away; and one NaN
    in the first row's drive, which its rates must carry to the row's other neurons."""
    torch.manual_seed(4)
    n, batch = 20, 29
    W = (torch.rand(n, n, dtype=dtype) / n).requires_grad_()
    h = torch.linspace(0, 40, batch, dtype=dtype)[:, None] * torch.rand(batch, n, dtype=dtype)
    h[0, 3] = torch.nan
    return h.requires_grad_(), W, torch.full((n,), 0.2, dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_kernels_let_a_blown_up_network_stay_non_finite(dtype):
    """Nothing clamps: where the torch form gives inf/NaN the kernels do too, in voltages and gradients."""
    results = {}
    for engine in ("torch", "auto"):
        h, W, dt_tau = unstable_drives(dtype)
        u = ssn_engine.ssn_settle(h, 200, torch.zeros_like(h), W, dt_tau, 0.04, 2.0, engine)
        u.sum().backward()
        results[engine] = u.detach(), h.grad, W.grad
    for got, expected in zip(results["auto"], results["torch"]):
        assert torch.equal(got.isfinite(), expected.isfinite())
    u, grad_h, grad_W = results["auto"]
    finite_rows = u.isfinite().all(1)
    assert not u[0].isfinite().any() and 0 < finite_rows.sum() < len(u)  # some rows settled, others blew up
    assert not grad_W.isfinite().all()
    torch.testing.assert_close(u[finite_rows], results["torch"][0][finite_rows])
    torch.testing.assert_close(grad_h[finite_rows], results["torch"][1][finite_rows])


def test_a_blown_up_static_ssn_gives_a_non_finite_loss_on_the_fused_path():
    torch.manual_seed(5)
    m = SSNStatic(784, 10, 13, 7, dt_tau_e=2.5, dt_tau_i=2.5)  # explicit Euler past its stability limit
    assert ssn_engine.backend(m.circuit.dt_tau, m.engine) == "cpu-kernels"
    loss, logits = m.loss(torch.rand(4, 784), torch.zeros(4, dtype=torch.long))
    assert not torch.isfinite(loss) and not logits.isfinite().any()


def test_the_trainer_records_a_blown_up_ssn_as_diverged(tmp_path):
    run_dir = tmp_path / "run"
    result = run_in_process(
        *smoke_overrides("ssn_static", "mnist", tmp_path / "data"),
        "model.dt_tau_e=1.0",
        "model.dt_tau_i=1.0",
        "model.power=4.0",
        "model.input_scale=100.0",  # quartic: explodes
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    record = read_metrics(run_dir)
    assert record["status"] == "diverged" and record["diverged_at"]["loss"] in ("nan", "inf")


def test_fused_buffers_are_reused_without_changing_the_numbers():
    torch.manual_seed(6)
    m = perturbed(SSNStatic(784, 10, 13, 7, steps=30))
    small, large = torch.rand(5, 784), torch.rand(9, 784)
    first = loss_and_grads(m, lambda: m(small))
    loss_and_grads(m, lambda: m(large))  # another shape in between: its own pooled buffer
    again = loss_and_grads(m, lambda: m(small))
    assert torch.equal(first[0], again[0])
    assert all(torch.equal(first[1][k], again[1][k]) for k in first[1])


def test_fused_engine_refuses_a_second_backward_through_one_graph():
    m = SSNStatic(784, 10, 6, 4, steps=5)
    loss = m(torch.rand(3, 784)).sum()
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="retain_graph"):
        loss.backward()


def test_without_kernels_auto_means_the_torch_form(monkeypatch):
    monkeypatch.setattr(ssn_fused, "available", lambda tensor: False)
    assert ssn_engine.backend(torch.zeros(1)) == "torch"
    with pytest.raises(ValueError, match="engine"):
        SSNStatic(784, 10, engine="fused")


def test_sequence_engine_without_grad_and_divergence(engine):
    torch.manual_seed(2)
    m = SSN(2, 10, n_excitatory=6, n_inhibitory=6, engine=engine)
    x = torch.rand(3, 200, 2)
    with torch.no_grad():
        torch.testing.assert_close(m.run_steps(x), DynamicalModel.run_steps(m, x))
        m.circuit.raw_weights[:, :6] += 3.0  # runaway excitation
        assert not m.run_steps(x).isfinite().all()
        assert not DynamicalModel.run_steps(m, x).isfinite().all()
