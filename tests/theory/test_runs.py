"""Every theory experiment, run as the CLI runs it (the composed `theory` node through hydra.utils.instantiate): the
config carries the settings of organics_bench/theory/settings.py, an override reaches the run, smoke shrinks it,
and the JSON records exactly the settings that ran."""

import dataclasses
import json
import pathlib
import re

import pytest
from hydra import compose, initialize_config_module
from hydra.utils import instantiate

from organics_bench.theory import wr_sweep
from organics_bench.theory.settings import (
    SETTINGS,
    FixedPointIterationSettings,
    JacobianSweepSettings,
    OscillatorSettings,
    PhasePortraitsSettings,
    SSNContrastSettings,
    WrSweepSettings,
    from_config,
    register,
    target,
)

CONF = pathlib.Path(__file__).resolve().parents[2] / "conf" / "experiment" / "theory"
KEYS = {"experiment", "claim", "spec", "headline", "claim_holds", "params", "seed", "smoke", "wall_time_s"}


def theory_node(name: str, *overrides: str):
    """The `theory` node of `organics-bench experiment=theory/<name> <overrides>`."""
    register()
    with initialize_config_module("organics_bench.conf", version_base="1.3"):
        return compose("config", overrides=[f"experiment=theory/{name}", *overrides]).theory


def as_json(value):
    return json.loads(json.dumps(value))


def size(value):
    return len(value) if isinstance(value, tuple) else value


def test_every_experiment_has_a_config():
    assert sorted(p.stem for p in CONF.glob("*.yaml")) == sorted(SETTINGS)


@pytest.mark.parametrize("name", SETTINGS)
def test_the_config_asks_for_the_paper_scale_settings(name):
    node = theory_node(name)
    assert node._target_ == target(name)
    assert from_config(node) == SETTINGS[name]()


@pytest.mark.parametrize("name", SETTINGS)
def test_smoke_shrinks_its_fields_and_keeps_the_rest(name):
    full, smoke = SETTINGS[name](), SETTINGS[name].build({}, smoke=True)
    for field in dataclasses.fields(full):
        before, after = getattr(full, field.name), getattr(smoke, field.name)
        if field.name in SETTINGS[name].SMOKE:
            assert size(after) < size(before), field.name
        else:
            assert after == before, field.name


@pytest.mark.parametrize("name", SETTINGS)
def test_smoke_run_writes_png_and_json_with_its_settings(name, tmp_path):
    summary = instantiate(theory_node(name), out_dir=tmp_path, smoke=True, seed=0)
    png, js = tmp_path / f"{name}.png", tmp_path / f"{name}.json"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    data = json.loads(js.read_text())
    assert KEYS <= data.keys() and data["experiment"] == name and data["smoke"] is True
    assert data == as_json(summary)
    assert data["params"] == as_json(dataclasses.asdict(SETTINGS[name].build({}, smoke=True)))
    assert isinstance(data["claim_holds"], bool) and data["headline"]


def test_an_override_reaches_the_run(tmp_path):
    node = theory_node("wr_sweep", "theory.sizes=[4,8]", "theory.bounds=[1.5]", "theory.n_trials=3", "theory.t_frac=20")
    summary = instantiate(node, out_dir=tmp_path, smoke=False, seed=0)
    assert summary["params"] == {
        **as_json(dataclasses.asdict(WrSweepSettings())),
        "sizes": [4, 8],
        "bounds": [1.5],
        "n_trials": 3,
        "t_frac": 20,
    }
    assert [(cell["bound"], cell["n"], cell["trials"]) for cell in summary["cells"]] == [(1.5, 4, 3), (1.5, 8, 3)]


def test_a_nested_override_reaches_the_settings():
    settings = from_config(theory_node("phase_portraits", "theory.panels.1.w_r=0.7"))
    assert settings.panels[1] == {**PhasePortraitsSettings().panels[1], "w_r": 0.7}
    assert isinstance(settings.panels, tuple) and settings.panels[0] == PhasePortraitsSettings().panels[0]


@pytest.mark.parametrize(
    "settings, overrides, message",
    [
        (WrSweepSettings, {"n_trials": 0}, "n_trials must be an integer >= 1, got 0"),
        (WrSweepSettings, {"tol": "abc"}, "tol must be a number > 0, got 'abc'"),
        (WrSweepSettings, {"sizes": [4, 0]}, "sizes must be a non-empty list of integers >= 1, got [4, 0]"),
        (WrSweepSettings, {"size": [4]}, "size is not a setting of WrSweepSettings; its settings are: bounds, sizes,"),
        (JacobianSweepSettings, {"gain_range": [10.0, 0.1]}, "gain_range must be [low, high] with 0 < low <= high"),
        (OscillatorSettings, {"n_trajectories": 8}, "n_trajectories must be an integer >= 12, got 8"),
        (
            PhasePortraitsSettings,
            {"panels": [{"name": "1a"}]},
            "each of panels must have the keys name, rectified, w_r",
        ),
        (FixedPointIterationSettings, {"overlap_iter": 50}, "overlap_iter must be at most n_iter = 40, got 50"),
        (SSNContrastSettings, {"spread": -0.1}, "spread must be a number >= 0, got -0.1"),
    ],
)
def test_a_bad_setting_is_one_sentence(settings, overrides, message):
    with pytest.raises(ValueError, match=re.escape(message)) as err:
        settings.build(overrides)
    assert "\n" not in str(err.value)


def test_settings_are_checked_from_the_config_and_frozen():
    with pytest.raises(ValueError, match="foo is not a setting of WrSweepSettings"):
        from_config(theory_node("wr_sweep", "+theory.foo=1"))
    assert from_config({"_target_": "my_package.my_experiment.run", "anything": 1}) is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        WrSweepSettings().n_trials = 3


def test_same_seed_same_numbers(tmp_path):
    runs = [wr_sweep.run(tmp_path / str(i), smoke=True, seed=seed) for i, seed in enumerate((3, 3, 4))]
    numbers = [{k: v for k, v in run.items() if k != "wall_time_s"} for run in runs]
    assert numbers[0] == numbers[1]
    assert numbers[0]["cells"] != numbers[2]["cells"]
