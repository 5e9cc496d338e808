"""The settings of every theory experiment, one frozen dataclass each and their only source: the defaults are the
paper-scale run, `SMOKE` the fields `smoke=true` shrinks, `__post_init__` the checks.

`register()` stores each experiment's settings in Hydra's ConfigStore as `theory/<name>`, with its `run` as
`_target_`; `conf/experiment/theory/<name>.yaml` pulls that node in as `theory`, so the CLI's
`instantiate(cfg.theory, out_dir=..., smoke=..., seed=...)` calls `run` with every setting as a keyword, and
`organics-bench experiment=theory/wr_sweep theory.sizes=[4,8]` overrides one. The node is untyped: the checks here,
not OmegaConf's, judge a value, so a bad one fails in one sentence.
"""

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, ClassVar, TypeVar

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

S = TypeVar("S", bound="ExperimentSettings")


@dataclasses.dataclass(frozen=True)
class ExperimentSettings:
    """What the settings of every theory experiment share: lists held as tuples, construction from keyword
    overrides (a config node), and the smoke sizes."""

    SMOKE: ClassVar[Mapping[str, Any]] = {}
    """The values `smoke=true` puts in place of whatever these fields were set to, so that a run takes seconds."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, _frozen(getattr(self, f.name)))

    @classmethod
    def build(cls: type[S], overrides: Mapping[str, Any], smoke: bool = False) -> S:
        """The defaults with `overrides` in place (a ValueError names an unknown key), then `SMOKE` if `smoke`."""
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(overrides) - set(names))
        if unknown:
            raise ValueError(f"{unknown[0]} is not a setting of {cls.__name__}; its settings are: {', '.join(names)}")
        settings = cls(**overrides)
        return dataclasses.replace(settings, **cls.SMOKE) if smoke else settings


@dataclasses.dataclass(frozen=True)
class JacobianSweepSettings(ExperimentSettings):
    """`jacobian_sweep`: eig(J) at the closed-form fixed point of random W_r = I circuits (docs/equations.md,
    'Jacobian at the fixed point')."""

    n_circuits: int = 10240
    """Random circuits in total, spread over `sizes` in proportion to 1/n."""
    sizes: tuple[int, ...] = (2, 3, 4, 6, 8, 11, 16, 23, 32, 45, 64, 91, 128, 181, 256)
    """Circuit sizes n (neurons per population)."""
    min_per_size: int = 16
    """Fewest circuits of any one size."""
    gain_range: tuple[float, float] = (0.1, 10.0)
    """b, b0 and σ are log-uniform over this range, per neuron."""
    tau_range_ms: tuple[float, float] = (1.0, 100.0)
    """τ_y and τ_a (ms) are log-uniform over this range, per neuron."""
    w_scales: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0)
    """W = scale · U(0, 1) · Bernoulli(density ~ U(0, 1)), the scale drawn from these."""
    z_range: tuple[float, float] = (0.01, 10.0)
    """z = N(0, 1) · scale, the scale log-uniform over this range."""
    n_simulate: int = 256
    """Circuits simulated (Euler, from rest) to check that they reach the closed-form fixed point."""
    sim_max_steps: int = 20000
    """Euler steps at most per simulated circuit."""
    n_autograd_per_size: int = 8
    """Circuits per size whose analytic Jacobian is compared with torch.func.jacrev."""
    ones_z: tuple[float, ...] = (1.114752, 1.114752, 1.114752, 1.114752, -1.0)
    """Input z of the all-ones-W example (N = 5) of docs/equations.md, 'Closed-form example (all-ones W)'."""
    ones_b: float = 0.5
    """b of the all-ones-W example."""
    ones_b0: float = 0.4
    """b0 of the all-ones-W example."""
    ones_sigma: float = 0.1
    """σ of the all-ones-W example."""
    ones_tau_y_ms: float = 1.0
    """τ_y (ms) of the all-ones-W example."""
    ones_tau_a_ms: float = 2.0
    """τ_a (ms) of the all-ones-W example."""
    ones_alpha: float = 1.0
    """W = α·11ᵀ in the all-ones-W example."""

    SMOKE: ClassVar[Mapping[str, Any]] = {
        "n_circuits": 120,
        "sizes": (2, 5, 12),
        "min_per_size": 8,
        "n_simulate": 12,
        "sim_max_steps": 2000,
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        _counts(
            n_circuits=self.n_circuits,
            min_per_size=self.min_per_size,
            n_simulate=self.n_simulate,
            sim_max_steps=self.sim_max_steps,
            n_autograd_per_size=self.n_autograd_per_size,
        )
        _count_lists(sizes=self.sizes)
        _ranges(gain_range=self.gain_range, tau_range_ms=self.tau_range_ms, z_range=self.z_range)
        _positive_lists(w_scales=self.w_scales)
        _number_lists(ones_z=self.ones_z)
        _positive(
            ones_b=self.ones_b,
            ones_b0=self.ones_b0,
            ones_sigma=self.ones_sigma,
            ones_tau_y_ms=self.ones_tau_y_ms,
            ones_tau_a_ms=self.ones_tau_a_ms,
            ones_alpha=self.ones_alpha,
        )


@dataclasses.dataclass(frozen=True)
class OscillatorSettings(ExperimentSettings):
    """`oscillator`: the damped-oscillator form and energy of the W_r = I linearization (docs/equations.md, 'Damped
    oscillators and energy')."""

    n_instances: int = 2000
    """Random circuits for the companion-matrix check, split evenly over `sizes`."""
    sizes: tuple[int, ...] = (2, 3, 5, 8, 13, 21, 34, 55)
    """Circuit sizes n of the companion-matrix check."""
    n_trajectories: int = 400
    """Circuits simulated for the energy V(t) (the figure draws 12 of them at random)."""
    energy_size: int = 8
    """Neurons per population of those circuits."""
    perturbations: tuple[float, ...] = (0.001, 0.01, 0.1, 0.5, 1.0)
    """Relative perturbations of the initial state away from the fixed point."""
    max_steps: int = 6000
    """RK4 steps at most per trajectory."""
    energy_gain_range: tuple[float, float] = (0.2, 5.0)
    """b, b0 and σ of the energy circuits are log-uniform over this range."""
    energy_tau_range_ms: tuple[float, float] = (1.0, 10.0)
    """τ_y and τ_a (ms) of the energy circuits are log-uniform over this range."""
    energy_w_scales: tuple[float, ...] = (0.1, 1.0)
    """Scales of W of the energy circuits (as `JacobianSweepSettings.w_scales`)."""
    energy_z_range: tuple[float, float] = (0.1, 2.0)
    """Scale of z of the energy circuits, log-uniform over this range."""

    SMOKE: ClassVar[Mapping[str, Any]] = {
        "n_instances": 60,
        "sizes": (2, 5),
        "n_trajectories": 16,
        "perturbations": (0.001, 0.1),
        "max_steps": 600,
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        _counts(n_instances=self.n_instances, energy_size=self.energy_size, max_steps=self.max_steps)
        _counts(12, n_trajectories=self.n_trajectories)
        _count_lists(sizes=self.sizes)
        _positive_lists(perturbations=self.perturbations, energy_w_scales=self.energy_w_scales)
        _ranges(
            energy_gain_range=self.energy_gain_range,
            energy_tau_range_ms=self.energy_tau_range_ms,
            energy_z_range=self.energy_z_range,
        )


_FIG1 = {"b": 0.5, "w": 1.0, "z": 1.0, "tau_y": 2.0, "tau_a": 2.0}
_FIG3 = {"rectified": True, "w_r": 1.0, "b0": 0.5, "sigma": 0.1, "b": 0.5, "w": 1.0, "z": 1.0}
PANEL_KEYS = ("w_r", "b0", "sigma", "b", "w", "z", "tau_y", "tau_a")


@dataclasses.dataclass(frozen=True)
class PhasePortraitsSettings(ExperimentSettings):
    """`phase_portraits`: fixed points and phase portraits of the 2-D circuit (docs/equations.md, 'Two-dimensional
    model')."""

    panels: tuple[dict[str, Any], ...] = (
        {"name": "1a", "rectified": False, "w_r": 0.5, "b0": 0.5, "sigma": 0.1, **_FIG1},
        {"name": "1b", "rectified": False, "w_r": 2.0, "b0": 0.5, "sigma": 0.1, **_FIG1},
        {"name": "1c", "rectified": False, "w_r": 2.0, "b0": 1.0, "sigma": 1.0, **_FIG1},
        {"name": "1d", "rectified": True, "w_r": 0.5, "b0": 0.5, "sigma": 0.1, **_FIG1},
        {"name": "1e", "rectified": True, "w_r": 2.0, "b0": 0.5, "sigma": 0.1, **_FIG1},
        {"name": "1f", "rectified": True, "w_r": 2.0, "b0": 1.0, "sigma": 1.0, **_FIG1},
        {"name": "3a", **_FIG3, "tau_y": 2.0, "tau_a": 2.0},
        {"name": "3b", **_FIG3, "tau_y": 2.0, "tau_a": 10.0},
        {"name": "3c", **_FIG3, "tau_y": 10.0, "tau_a": 2.0},
    )
    """One phase portrait each: its name, the model (rectified or main) and the 2-D circuit's w_r, b0, sigma, b, w,
    z, tau_y, tau_a (ms). The defaults are Fig. 1 a-f (b = 0.5, w = 1, z = 1, τ = 2 ms) and Fig. 3 (rectified,
    w_r = 1, three τ_y/τ_a ratios)."""
    grid: int = 100
    """Points per axis of the vector-field grid."""
    n_random: int = 5000
    """Random 2-D circuits per sweep (one sweep with Fig. 1's inputs, one with any inputs)."""
    traj_steps: int = 1500
    """RK4 steps of the example trajectory in each panel."""
    stream_density: float = 1.1
    """Density of the streamlines (matplotlib's streamplot)."""

    SMOKE: ClassVar[Mapping[str, Any]] = {"grid": 20, "n_random": 20, "traj_steps": 50, "stream_density": 0.5}

    def __post_init__(self) -> None:
        super().__post_init__()
        _counts(n_random=self.n_random, traj_steps=self.traj_steps)
        _counts(2, grid=self.grid)
        _positive(stream_density=self.stream_density)
        if not self.panels:
            raise ValueError("panels must list at least one panel")
        for panel in self.panels:
            _check_panel(panel)
        names = [panel["name"] for panel in self.panels]
        if len(set(names)) < len(names):
            raise ValueError(f"panels must have distinct names, got {names}")


@dataclasses.dataclass(frozen=True)
class FixedPointIterationSettings(ExperimentSettings):
    """`fixed_point_iteration`: Algorithm 1 against simulation, the Fig. 4 protocol (docs/equations.md, 'Convergence
    test (Fig. 4)')."""

    n_circuits: int = 100
    """Random circuits."""
    n_units: int = 10
    """Principal neurons y per circuit (and as many modulators a)."""
    n_iter: int = 40
    """Iterations of Algorithm 1, shown in the error panel."""
    overlap_iter: int = 15
    """Iterate compared with the simulated fixed point in the overlap panel (Fig. 4d)."""
    wr_bound: float = 1.0
    """σ_max(W_r)."""
    tau_ms: float = 2.0
    """τ_y = τ_a (ms)."""

    SMOKE: ClassVar[Mapping[str, Any]] = {"n_circuits": 10, "n_iter": 30}

    def __post_init__(self) -> None:
        super().__post_init__()
        _counts(n_circuits=self.n_circuits, n_units=self.n_units, n_iter=self.n_iter)
        _counts(0, overlap_iter=self.overlap_iter)
        _positive(wr_bound=self.wr_bound, tau_ms=self.tau_ms)
        if self.overlap_iter > self.n_iter:
            raise ValueError(f"overlap_iter must be at most n_iter = {self.n_iter}, got {self.overlap_iter}")


@dataclasses.dataclass(frozen=True)
class WrSweepSettings(ExperimentSettings):
    """`wr_sweep`: stable fraction of random circuits vs the bound on σ_max(W_r) (docs/equations.md, 'Generic W_r
    conjecture')."""

    bounds: tuple[float, ...] = (1.0, 2.0, 3.0)
    """Bounds s = σ_max(W_r)."""
    sizes: tuple[int, ...] = (10, 32, 64)
    """Circuit sizes N."""
    n_trials: int = 200
    """Random circuits per (s, N)."""
    dt_frac: float = 0.05
    """Euler step dt / τ."""
    t_frac: float = 200.0
    """Horizon T / τ."""
    init: float = 0.01
    """Initial y = a."""
    tol: float = 1e-5
    """Relative ODE residual below which a circuit has converged."""

    SMOKE: ClassVar[Mapping[str, Any]] = {"bounds": (1.0, 3.0), "sizes": (6,), "n_trials": 16, "t_frac": 100.0}

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive_lists(bounds=self.bounds)
        _count_lists(sizes=self.sizes)
        _counts(n_trials=self.n_trials)
        _positive(dt_frac=self.dt_frac, t_frac=self.t_frac, init=self.init, tol=self.tol)
        if self.t_frac < self.dt_frac:
            raise ValueError(f"t_frac must be at least dt_frac = {self.dt_frac} (one Euler step), got {self.t_frac}")


@dataclasses.dataclass(frozen=True)
class SSNContrastSettings(ExperimentSettings):
    """`ssn_contrast`: random E/I SSNs and random W_r = I ORGaNICs against input strength (docs/protocols.md,
    'Stabilized supralinear networks')."""

    n_circuits: int = 200
    """Random circuits per input strength (SSN and ORGaNICs each)."""
    n_e: int = 40
    """Excitatory SSN neurons."""
    n_i: int = 10
    """Inhibitory SSN neurons."""
    spread: float = 0.3
    """J_ab = Ahmadian-2013 value × 10^U(-spread, spread)."""
    k: float = 0.04
    """SSN gain k."""
    power: float = 2.0
    """SSN exponent n."""
    tau_e_ms: float = 20.0
    """τ_E (ms)."""
    tau_i_ms: float = 10.0
    """τ_I (ms)."""
    inputs: tuple[float, ...] = (1.0, 2.0, 5.0, 10.0, 20.0, 40.0, 80.0)
    """Input strengths h (SSN drive; ORGaNICs ||z||)."""
    dt_ms: float = 0.5
    """SSN Euler step (ms)."""
    t_max_ms: float = 2000.0
    """SSN simulation horizon (ms)."""

    SMOKE: ClassVar[Mapping[str, Any]] = {
        "n_circuits": 12,
        "n_e": 8,
        "n_i": 2,
        "inputs": (1.0, 20.0),
        "t_max_ms": 1000.0,
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        _counts(n_circuits=self.n_circuits, n_e=self.n_e, n_i=self.n_i)
        _non_negative(spread=self.spread)
        _positive(
            k=self.k,
            power=self.power,
            tau_e_ms=self.tau_e_ms,
            tau_i_ms=self.tau_i_ms,
            dt_ms=self.dt_ms,
            t_max_ms=self.t_max_ms,
        )
        _positive_lists(inputs=self.inputs)
        if self.t_max_ms < self.dt_ms:
            raise ValueError(f"t_max_ms must be at least dt_ms = {self.dt_ms} (one Euler step), got {self.t_max_ms}")


SETTINGS: dict[str, type[ExperimentSettings]] = {
    "jacobian_sweep": JacobianSweepSettings,
    "oscillator": OscillatorSettings,
    "phase_portraits": PhasePortraitsSettings,
    "fixed_point_iteration": FixedPointIterationSettings,
    "wr_sweep": WrSweepSettings,
    "ssn_contrast": SSNContrastSettings,
}
"""Every theory experiment (its module `organics_bench.theory.<name>`) and its settings."""


def target(name: str) -> str:
    """The `_target_` of experiment `name`: its run function."""
    return f"organics_bench.theory.{name}.run"


def register() -> None:
    """Store every experiment's settings, with its run function as `_target_`, in Hydra's ConfigStore as
    `theory/<name>` (what `conf/experiment/theory/<name>.yaml` pulls in)."""
    store = ConfigStore.instance()
    for name, settings in SETTINGS.items():
        store.store(group="theory", name=name, node={"_target_": target(name), **dataclasses.asdict(settings())})


def from_config(node: Mapping[str, Any]) -> ExperimentSettings | None:
    """The settings a composed `theory` node asks for (ValueError on an unknown key or a bad value), or None when
    its `_target_` is not one of these experiments."""
    by_target = {target(name): settings for name, settings in SETTINGS.items()}
    settings = by_target.get(node.get("_target_"))
    if settings is None:
        return None
    return settings.build({key: value for key, value in node.items() if not str(key).startswith("_")})


def _frozen(value: Any) -> Any:
    """A config's lists as tuples and its mappings as dicts, recursively (a frozen dataclass holds no list)."""
    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value)
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(v) for v in value)
    if isinstance(value, dict):
        return {key: _frozen(v) for key, v in value.items()}
    return value


def _shown(value: Any) -> str:
    return repr(list(value) if isinstance(value, tuple) else value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _counts(low: int = 1, **values: Any) -> None:
    for name, value in values.items():
        if not (_is_int(value) and value >= low):
            raise ValueError(f"{name} must be an integer >= {low}, got {_shown(value)}")


def _positive(**values: Any) -> None:
    for name, value in values.items():
        if not (_is_number(value) and value > 0):
            raise ValueError(f"{name} must be a number > 0, got {_shown(value)}")


def _numbers(**values: Any) -> None:
    for name, value in values.items():
        if not _is_number(value):
            raise ValueError(f"{name} must be a number, got {_shown(value)}")


def _non_negative(**values: Any) -> None:
    for name, value in values.items():
        if not (_is_number(value) and value >= 0):
            raise ValueError(f"{name} must be a number >= 0, got {_shown(value)}")


def _count_lists(**values: Any) -> None:
    for name, value in values.items():
        if not (isinstance(value, tuple) and value and all(_is_int(v) and v >= 1 for v in value)):
            raise ValueError(f"{name} must be a non-empty list of integers >= 1, got {_shown(value)}")


def _positive_lists(**values: Any) -> None:
    for name, value in values.items():
        if not (isinstance(value, tuple) and value and all(_is_number(v) and v > 0 for v in value)):
            raise ValueError(f"{name} must be a non-empty list of numbers > 0, got {_shown(value)}")


def _number_lists(**values: Any) -> None:
    for name, value in values.items():
        if not (isinstance(value, tuple) and value and all(_is_number(v) for v in value)):
            raise ValueError(f"{name} must be a non-empty list of numbers, got {_shown(value)}")


def _ranges(**values: Any) -> None:
    for name, value in values.items():
        if not (
            isinstance(value, tuple)
            and len(value) == 2
            and all(_is_number(v) for v in value)
            and 0 < value[0] <= value[1]
        ):
            raise ValueError(f"{name} must be [low, high] with 0 < low <= high, got {_shown(value)}")


def _check_panel(panel: Any) -> None:
    keys = ("name", "rectified", *PANEL_KEYS)
    if not isinstance(panel, dict) or set(panel) != set(keys):
        raise ValueError(f"each of panels must have the keys {', '.join(keys)}, got {_shown(panel)}")
    if not isinstance(panel["name"], str) or not isinstance(panel["rectified"], bool):
        raise ValueError(f"a panel's name must be a string and its rectified true or false, got {panel}")
    _numbers(**{f"panel {panel['name']}: z": panel["z"]})
    _positive(**{f"panel {panel['name']}: {key}": panel[key] for key in PANEL_KEYS if key != "z"})
