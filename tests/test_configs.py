"""Every config composes, resolves and builds; every model x task pair and every experiment runs a smoke epoch
through the installed console script."""
from importlib import resources

import pytest
from hydra import compose, initialize_config_module
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import OmegaConf

from organics_bench.cli import available_choices
from tests.helpers import read_metrics, run_cli

MODELS, TASKS = available_choices("model"), available_choices("task")


def experiments() -> list[str]:
    root = resources.files("organics_bench.conf").joinpath("experiment")
    found = []
    for family in root.iterdir():
        if family.is_dir():
            found += [f"{family.name}/{entry.name[:-5]}" for entry in family.iterdir() if entry.name.endswith(".yaml")]
    return sorted(found)


def composed(overrides: list[str]):
    with initialize_config_module("organics_bench.conf", version_base="1.3"):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        job_keys = [key for key in cfg if key != "hydra"]
        return OmegaConf.create(OmegaConf.to_container(OmegaConf.masked_copy(cfg, job_keys), resolve=True))


def test_the_groups_hold_what_the_readme_promises():
    assert {"organics", "organics_fixed_tau", "lstm"} <= set(MODELS)
    assert {"smnist", "psmnist"} <= set(TASKS)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("task", TASKS)
def test_every_model_task_pair_composes_and_builds(model, task):
    cfg = composed([f"model={model}", f"task={task}"])
    spec = instantiate(cfg.task).spec
    net = instantiate(cfg.model, d_input=spec.d_input, n_classes=spec.n_classes)
    assert net.readout_layer.out_features == spec.n_classes
    assert cfg.trainer.epochs > 0 and cfg.optimizer.lr > 0


@pytest.mark.parametrize("experiment", experiments())
def test_every_experiment_composes(experiment):
    cfg = composed([f"experiment={experiment}"])
    assert cfg.experiment_name


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("task", TASKS)
def test_every_model_task_pair_runs_a_smoke_epoch(tmp_path, model, task):
    run_dir = tmp_path / "run"
    result = run_cli("debug=smoke", f"model={model}", f"task={task}", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    record = read_metrics(run_dir)
    assert record["status"] == "ok" and record["model"] == model and record["task"] == task
    assert record["epochs_completed"] == 1 and record["global_step"] == 2


@pytest.mark.parametrize("experiment", experiments())
def test_every_experiment_runs_in_smoke_mode(tmp_path, experiment):
    result = run_cli(f"experiment={experiment}", "debug=smoke", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert list((tmp_path / "run").glob("*.json"))
