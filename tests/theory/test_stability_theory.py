"""Headline numbers of the theory experiments at small sizes (docs/equations.md, 'Algorithm 1' and 'Stability
theory')."""

import math

import numpy as np
import pytest
import torch

from organics_bench.theory import fixed_point_iteration, jacobian_sweep, oscillator, phase_portraits, wr_sweep
from organics_bench.theory.circuit import (
    DTYPE,
    eigvals,
    fixed_point_identity,
    jacobian,
    max_real_eig,
    residual,
    sample_broad,
    sample_unit,
)
from organics_bench.theory.settings import JacobianSweepSettings, OscillatorSettings, WrSweepSettings


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(1)


# Jacobian at the fixed point --------------------------------------------------------------------------------------
@pytest.mark.parametrize("rectified", [False, True])
def test_random_identity_circuits_are_all_stable(gen, rectified):
    margins = []
    for n in (2, 3, 5, 9, 16):
        c = sample_broad(40, n, gen)
        y, a = fixed_point_identity(c, rectified)
        tau_min = torch.minimum(c.tau_y, c.tau_a).amin(-1)
        margins.append(max_real_eig(jacobian(c, y, a, rectified)) * tau_min)
        yr = y.clamp_min(0) if rectified else y
        M = c.W * (yr**2).unsqueeze(-2)
        assert (eigvals(M).abs().amax(-1) < 1).all()
    assert (torch.cat(margins) < 0).all()


def test_all_ones_closed_form_spectrum():
    """The experiment's all-ones example gives the spectrum of docs/equations.md, 'Closed-form example'."""
    s = JacobianSweepSettings()
    out = jacobian_sweep.all_ones_check(
        s.ones_z, s.ones_b, s.ones_b0, s.ones_sigma, s.ones_tau_y_ms, s.ones_tau_a_ms, s.ones_alpha
    )
    assert out["max_abs_diff_per_s"] < 1e-8
    assert out["distinct_per_s"] == [
        (-1115.47, 0.0),
        (-1000.0, 0.0),
        (-558.06, -496.29),
        (-558.06, 496.29),
        (-500.0, 0.0),
    ]


def test_all_ones_closed_form_general_case(gen):
    z = torch.randn(7, generator=gen, dtype=DTYPE)
    z[0] = 1.0
    out = jacobian_sweep.all_ones_check(z.tolist(), b=0.7, b0=0.3, sigma=0.5, tau_y=3.0, tau_a=1.5, alpha=0.4)
    assert out["max_abs_diff_per_s"] < 1e-8


def test_size_counts_sum_and_favour_small():
    counts = jacobian_sweep.size_counts(1000, [2, 8, 64], 5)
    assert sum(counts.values()) == 1000 and counts[2] > counts[8] > counts[64] >= 5


# Damped oscillators and energy ------------------------------------------------------------------------------------
def test_companion_matrix_has_jacobian_spectrum(gen):
    for n in (2, 6, 15):
        c = sample_broad(30, n, gen)
        y, a = fixed_point_identity(c)
        B, K = oscillator.oscillator_form(c, y, a)
        err = oscillator.spectrum_mismatch(eigvals(oscillator.companion(B, K)), eigvals(jacobian(c, y, a)))
        assert err.max() < 1e-10
        assert oscillator.second_order_residual(c, y, a).max() < 1e-10


def test_certified_weights_make_energy_dissipative_but_unit_weights_do_not(gen):
    c = sample_broad(300, 6, gen)
    y, a = fixed_point_identity(c)
    B, _ = oscillator.oscillator_form(c, y, a)
    t = oscillator.certified_weights(y, a, B)
    assert (t > 0).all()
    assert (oscillator.dissipation_min_eig(y, a, B, t) > 0).all()
    assert (oscillator.dissipation_min_eig(y, a, B, torch.ones_like(y)) < 0).any()


def test_energy_decreases_near_fixed_point_with_certified_weights(gen):
    s = OscillatorSettings()
    c = sample_broad(40, 5, gen, s.energy_gain_range, s.energy_tau_range_ms, s.energy_w_scales, s.energy_z_range)
    t, V = oscillator._energy_trajectories(c, 1e-3, 3000, gen)
    assert torch.allclose(V[:, :, 0], torch.ones(2, 40, dtype=DTYPE))
    assert (V[1].diff(dim=-1) <= 1e-9).all()
    assert (V[1][:, -1] < 0.5).all()


def test_energy_is_zero_at_fixed_point(gen):
    c = sample_broad(5, 4, gen)
    y, a = fixed_point_identity(c)
    assert oscillator.energy(c, y, a, y, a, torch.ones_like(y)).abs().max() < 1e-20


# Two-dimensional model --------------------------------------------------------------------------------------------
FIG1 = dict(b=0.5, w=1.0, z=1.0, tau_y=2.0, tau_a=2.0)


@pytest.mark.parametrize(
    "params, points, lam",
    [
        (dict(w_r=0.5, b0=0.5, sigma=0.1), [(0.898, 0.0129, True)], (-0.188, 0.057)),
        (
            dict(w_r=2.0, b0=0.5, sigma=0.1),
            [(-0.979, 0.0598, False), (-0.569, 0.0037, False), (0.998, 0.563, True)],
            (-0.126, 0.598),
        ),
        (dict(w_r=2.0, b0=1.0, sigma=1.0), [(0.417, 1.210, True)], (-0.507, 0.295)),
    ],
)
def test_fig1_fixed_points_and_eigenvalues(params, points, lam):
    pts = phase_portraits.fixed_points({**params, **FIG1}, rectified=False)
    assert [(round(q["y"], 3), round(q["a"], 4 if q["a"] < 0.1 else 3), q["stable"]) for q in pts] == points
    stable = next(q for q in pts if q["stable"])
    ev = stable["eigenvalues_per_ms"][0]
    assert (round(ev.real, 3), round(abs(ev.imag), 3)) == lam
    assert max(q["residual"] for q in pts) < 1e-12


def test_fig1b_unstable_points_are_focus_and_saddle():
    pts = phase_portraits.fixed_points(dict(w_r=2.0, b0=0.5, sigma=0.1, **FIG1), rectified=False)
    assert [q["type"] for q in pts] == ["unstable focus", "saddle", "stable focus"]


def test_rectified_model_keeps_only_positive_branch():
    pts = phase_portraits.fixed_points(dict(w_r=2.0, b0=0.5, sigma=0.1, **FIG1), rectified=True)
    assert len(pts) == 1 and pts[0]["stable"] and round(pts[0]["y"], 3) == 0.998
    neg = phase_portraits.fixed_points(dict(w_r=0.5, b0=0.5, sigma=0.1, **{**FIG1, "z": -1.0}), rectified=True)
    assert [(q["y"], round(q["a"], 6), q["stable"]) for q in neg] == [(-0.5, 0.0025, True)]


def test_fig3_fixed_point_independent_of_time_constants():
    base = dict(w_r=1.0, b0=0.5, sigma=0.1, b=0.5, w=1.0, z=1.0)
    for ty, ta in ((2.0, 2.0), (2.0, 10.0), (10.0, 2.0)):
        (q,) = phase_portraits.fixed_points({**base, "tau_y": ty, "tau_a": ta}, rectified=True)
        assert q["stable"] and math.isclose(q["a"], 0.2525) and math.isclose(q["y"], 0.5 / math.sqrt(0.2525))


def test_random_2d_circuits_always_have_a_stable_fixed_point():
    out = phase_portraits.regime_sweep(150, np.random.default_rng(0), fig1_inputs=False)
    assert out["fraction_has_stable"] == 1.0


def test_negative_fixed_points_need_the_stated_condition():
    """y < 0 fixed points require b0σ <= √a < 1 - 1/w_r (a necessary condition)."""
    rng = np.random.default_rng(3)
    for _ in range(300):
        p = dict(zip(("w_r", "b0", "sigma", "b", "w"), 10 ** rng.uniform(-1, 1, 5)), z=1.0, tau_y=2.0, tau_a=2.0)
        for q in phase_portraits.fixed_points(p, rectified=False):
            if q["y"] < 0:
                assert p["b0"] * p["sigma"] <= math.sqrt(q["a"]) < 1 - 1 / p["w_r"]


# Algorithm 1 ------------------------------------------------------------------------------------------------------
def test_algorithm1_converges_to_simulated_fixed_point(gen):
    c = sample_unit(20, 10, gen, wr_bound=1.0)
    y_true, a_true, info = fixed_point_iteration.simulated_fixed_point(c)
    assert info["fraction_converged"] == 1.0 and info["max_newton_correction"] < 1e-8
    ys, as_ = fixed_point_iteration.algorithm1(c, 40)
    err = (ys - y_true).norm(dim=-1)
    assert err[5].max() < 1e-2
    assert err[10].mean() < 1e-4
    assert err[-1].max() < 1e-10
    assert residual(c, ys[-1], as_[-1]).max() < 1e-12


def test_diag_variant_converges_to_a_non_fixed_point(gen):
    c = sample_unit(20, 10, gen, wr_bound=1.0)
    ys, as_ = fixed_point_iteration.algorithm1(c, 60, variant="diag")
    assert (ys[-1] - ys[-2]).abs().max() < 1e-8
    assert residual(c, ys[-1], as_[-1]).min() > 1e-3


def test_algorithm1_is_exact_for_identity_recurrence(gen):
    c = sample_unit(5, 6, gen, wr_bound=None)
    ys, as_ = fixed_point_iteration.algorithm1(c, 1)
    y, a = fixed_point_identity(c)
    assert torch.allclose(ys[0], y) and torch.allclose(as_[0], a) and torch.allclose(ys[1], y)


# Generic W_r conjecture -------------------------------------------------------------------------------------------
def test_unit_bound_circuits_all_stable(gen):
    s = WrSweepSettings()
    cell = wr_sweep.classify(40, 10, 1.0, gen, s.dt_frac, s.t_frac, s.init, s.tol)
    assert cell["stable"] == 40 and cell["fraction_stable"] == 1.0
    assert (cell["max_real_lambda_times_tau"] < 0).all()


def test_outcome_counts_add_up(gen):
    s = WrSweepSettings()
    cell = wr_sweep.classify(30, 8, 3.0, gen, s.dt_frac, 100.0, s.init, s.tol)
    assert sum(cell[k] for k in ("stable", "converged_unstable", "not_converged", "diverged")) == 30
    d = cell["not_converged_diagnosis"]
    assert d["found_and_stable"] + d["found_and_unstable"] <= d["fixed_point_found_by_newton"] <= cell["not_converged"]
