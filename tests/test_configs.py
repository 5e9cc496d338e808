"""Every config composes, resolves and builds; every model x task pair and every experiment runs a smoke epoch
through the installed console script."""
from importlib import resources

import pytest
from hydra.utils import instantiate

from organics_bench.cli import available_choices
from organics_bench.models.build import build_model, model_choices_by_kind
from tests.helpers import composed, read_metrics, run_cli, smoke_data_overrides, smoke_overrides

MODELS, TASKS = available_choices("model"), available_choices("task")
TASK_KIND = {"smnist": "sequence", "psmnist": "sequence", "parity": "sequence", "mnist": "static",
             "cifar10": "static"}
KINDS = model_choices_by_kind()
PAIRS = [(m, t) for t in TASKS for m in KINDS[TASK_KIND[t]]]


def experiments() -> list[str]:
    root = resources.files("organics_bench.conf").joinpath("experiment")
    found = []
    for family in root.iterdir():
        if family.is_dir():
            found += [f"{family.name}/{entry.name[:-5]}" for entry in family.iterdir() if entry.name.endswith(".yaml")]
    return sorted(found)


def test_the_groups_hold_what_the_readme_promises():
    assert {"organics", "organics_fixed_tau", "lstm", "gru", "rnn"} <= set(KINDS["sequence"])
    assert {"conv_organics", "cnn"} <= set(KINDS["static"])
    assert set(TASKS) == set(TASK_KIND)
    assert sorted(KINDS["sequence"] + KINDS["static"]) == MODELS


@pytest.mark.parametrize("model,task", PAIRS)
def test_every_model_task_pair_composes_and_builds(model, task):
    cfg, _ = composed([f"model={model}", f"task={task}"])
    spec = instantiate(cfg.task).spec
    assert spec.kind == TASK_KIND[task]
    net = build_model(cfg.model, spec, model, task)
    assert net.readout_layer.out_features == spec.n_classes
    assert cfg.trainer.epochs > 0 and cfg.optimizer.lr > 0


@pytest.mark.parametrize("experiment", experiments())
def test_every_experiment_composes(experiment):
    cfg, _ = composed([f"experiment={experiment}"])
    assert cfg.experiment_name


@pytest.mark.parametrize("model,task", PAIRS)
def test_every_model_task_pair_runs_a_smoke_epoch(tmp_path, model, task):
    run_dir = tmp_path / "run"
    result = run_cli(*smoke_overrides(model, task, tmp_path / "data"), f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    record = read_metrics(run_dir)
    assert record["status"] == "ok" and record["model"] == model and record["task"] == task
    assert record["epochs_completed"] == 1 and record["global_step"] == 2
    assert record["n_params"] > 0 and 0.0 <= record["metrics"]["test/acc"] <= 1.0


@pytest.mark.parametrize("model,task", [("lstm", "cifar10"), ("conv_organics", "smnist")])
def test_a_model_on_the_wrong_kind_of_task_is_one_line(tmp_path, model, task):
    result = run_cli(*smoke_overrides(model, task, tmp_path / "data"), f"hydra.run.dir={tmp_path / 'run'}",
                     cwd=tmp_path)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and f"model={model}" in lines[0], result.stderr
    fitting = lines[0].split("models for")[1]
    expected, other = ("cnn", "lstm") if task == "cifar10" else ("lstm", "cnn")
    assert expected in fitting and other not in fitting


@pytest.mark.parametrize("experiment", experiments())
def test_every_experiment_runs_in_smoke_mode(tmp_path, experiment):
    cfg, model = composed([f"experiment={experiment}"])
    overrides = [] if cfg.mode == "theory" else smoke_data_overrides(model, cfg.task.name, tmp_path / "data")
    result = run_cli(f"experiment={experiment}", "debug=smoke", *overrides, f"hydra.run.dir={tmp_path / 'run'}",
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert list((tmp_path / "run").glob("*.json"))
