"""Every config composes, resolves and builds; every model x task pair runs a smoke epoch, and every experiment runs
in smoke mode through a Hydra multirun, each job's own record checked (through `organics_bench.cli:main`, in this
process: `run_in_process`)."""

import functools
import json
import os
from collections import defaultdict
from importlib import resources
from pathlib import Path

import pytest
from hydra.utils import instantiate

from organics_bench.cli import available_choices
from organics_bench.models.build import build_model, model_choices_by_kind
from organics_bench.report import diverged, load_records
from tests.helpers import (
    ROOT,
    CliResult,
    composed,
    one_line_error,
    read_metrics,
    run_in_process,
    smoke_data_overrides,
    smoke_overrides,
)

MODELS, TASKS = available_choices("model"), available_choices("task")
TASK_KIND = {
    "smnist": "sequence",
    "psmnist": "sequence",
    "parity": "sequence",
    "adding": "sequence",
    "mnist": "static",
    "cifar10": "static",
}
KINDS = model_choices_by_kind()
PAIRS = [(m, t) for t in TASKS for m in KINDS[TASK_KIND[t]]]


def experiments() -> list[str]:
    root = resources.files("organics_bench.conf").joinpath("experiment")
    found = []
    for family in root.iterdir():
        if family.is_dir():
            found += [f"{family.name}/{entry.name[:-5]}" for entry in family.iterdir() if entry.name.endswith(".yaml")]
    return sorted(found)


EXPERIMENTS = experiments()


@functools.cache
def experiment_facts(experiment: str) -> dict:
    """What `experiment=<experiment>` composes to: its name, mode, model choice and task (composed once per worker,
    for the tests below)."""
    cfg, model = composed([f"experiment={experiment}"])
    theory = cfg.mode == "theory"
    return {
        "name": cfg.experiment_name,
        "theory": theory,
        "model": model,
        "task": None if theory else cfg.task.name,
        "curriculum": not theory and bool(cfg.task.get("curriculum_epochs")),
    }


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


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_under_its_own_name(experiment):
    name = experiment_facts(experiment)["name"]
    # The default, ${task.name}, would file the records of every psmnist experiment together (and is always set).
    assert name.endswith(experiment.rsplit("/", 1)[1]), (experiment, name)


def test_no_two_experiments_share_a_name():
    names = defaultdict(list)
    for experiment in EXPERIMENTS:
        try:
            names[experiment_facts(experiment)["name"]].append(experiment)
        except Exception:  # an experiment that does not compose fails its own test above
            continue
    assert {name: found for name, found in names.items() if len(found) > 1} == {}


@pytest.mark.parametrize("model,task", PAIRS)
def test_every_model_task_pair_runs_a_smoke_epoch(tmp_path, model, task):
    run_dir = tmp_path / "run"
    result = run_in_process(*smoke_overrides(model, task, tmp_path / "data"), f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.run_dir == run_dir
    record = read_metrics(run_dir)
    assert record["status"] == "ok" and record["model"] == model and record["task"] == task
    assert record["epochs_completed"] == 1 and record["global_step"] == 2
    assert record["n_params"] > 0 and 0.0 <= record["metrics"]["test/acc"] <= 1.0


@pytest.mark.parametrize("model,task", [("lstm", "cifar10"), ("conv_organics", "smnist")])
def test_a_model_on_the_wrong_kind_of_task_is_one_line(tmp_path, model, task):
    line = one_line_error(
        run_in_process(
            *smoke_overrides(model, task, tmp_path / "data"), f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path
        )
    )
    assert f"model={model}" in line, line
    fitting = line.split("models for")[1]
    expected, other = ("cnn", "lstm") if task == "cifar10" else ("lstm", "cnn")
    assert expected in fitting and other not in fitting
    assert not (tmp_path / "run").exists()


# ----- every experiment, smoke mode, one multirun per set of smoke data overrides ------------------------------------
class SmokeSweep:
    """`organics-bench -m debug=smoke experiment=A,B,... <smoke data overrides>`: the experiments that take the same
    overrides (model.hidden_size only where the model has one, bundled digits, fake CIFAR-10, small parity sets)
    share one multirun, run the first time one of them is asked for; each job runs in <sweep dir>/<experiment>.

    Under pytest-xdist the workers share `shared` (a file lock per multirun): whichever asks first runs it, the others
    wait for it and read its result; `--dist loadgroup` sends all these tests to one worker instead."""

    def __init__(self, shared: Path, data_dir: Path):
        self.shared, self.expected, self.groups = shared, {}, defaultdict(list)
        for experiment in EXPERIMENTS:
            try:
                facts = self.expected[experiment] = experiment_facts(experiment)
            except Exception as err:  # reported by the experiment's own tests
                self.expected[experiment] = {"error": f"does not compose: {err!r}"}
                continue
            overrides = () if facts["theory"] else tuple(smoke_data_overrides(facts["model"], facts["task"], data_dir))
            self.groups[overrides].append(experiment)

    def job(self, experiment: str) -> tuple[dict, Path, CliResult]:
        """(what the job should be, its dir, the multirun's result)."""
        from filelock import FileLock

        expected = self.expected[experiment]
        assert "error" not in expected, expected.get("error")
        ((index, overrides, group),) = [(i, o, g) for i, (o, g) in enumerate(self.groups.items()) if experiment in g]
        sweep_dir, saved = self.shared / f"sweep{index}", self.shared / f"sweep{index}.json"
        with FileLock(self.shared / f"sweep{index}.lock"):
            if not saved.exists():
                result = run_in_process(
                    "-m",
                    "debug=smoke",
                    f"experiment={','.join(group)}",
                    *overrides,
                    f"hydra.sweep.dir={sweep_dir}",
                    "hydra.sweep.subdir=${hydra:runtime.choices.experiment}",
                    cwd=self.shared,
                )
                saved.write_text(json.dumps([result.returncode, result.stdout, result.stderr]))
        return expected, sweep_dir / experiment, CliResult(*json.loads(saved.read_text()))


@pytest.fixture(scope="module")
def smoke_sweep(tmp_path_factory) -> SmokeSweep:
    base = tmp_path_factory.getbasetemp()  # pytest-<n>/popen-gw<k> on an xdist worker: share pytest-<n>
    shared = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "smoke_sweep"
    shared.mkdir(exist_ok=True)
    return SmokeSweep(shared, tmp_path_factory.mktemp("smoke_data"))


@pytest.mark.xdist_group("smoke_sweep")  # with --dist loadgroup, on one worker
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_runs_in_smoke_mode(smoke_sweep, experiment):
    expected, job_dir, sweep = smoke_sweep.job(experiment)
    where = f"{experiment}: multirun exit {sweep.returncode}; stderr: {sweep.stderr[-3000:]}"
    if expected["theory"]:
        name = expected["name"].removeprefix("theory_")
        assert (job_dir / f"{name}.json").is_file(), where
        summary = read_json(job_dir / f"{name}.json")
        assert summary["experiment"] == name and summary["smoke"] is True, summary
        assert summary["claim_holds"] is True, {k: v for k, v in summary.items() if k != "params"}
        assert (job_dir / f"{name}.png").stat().st_size > 10_000
        assert read_json(job_dir / "provenance.json")["command"].startswith("organics-bench ")
    else:
        assert (job_dir / "metrics.json").is_file(), where
        record = read_metrics(job_dir)
        assert record["status"] == "ok", (record["status"], record.get("diverged_at"), where)
        assert (record["experiment"], record["model"], record["task"]) == (
            expected["name"],
            expected["model"],
            expected["task"],
        )
        # Two smoke batches; a length curriculum's first epoch holds only the shortest strings: one batch.
        assert record["epochs_completed"] == 1 and record["global_step"] == (1 if expected["curriculum"] else 2)
        assert 0.0 <= record["metrics"]["test/acc"] <= 1.0
    assert sweep.returncode == 0, where


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.mark.parametrize("model", ["lstm", "gru"])
def test_the_cpu_table2_gated_rows_state_the_rate_their_committed_grid_chose(model):
    """cpu/table2_{lstm,gru}64_* run at the rate of the grid (cpu/lr_grid_*64_psmnist, seed 0) whose committed run
    had the best validation accuracy (a diverged run never wins); change one without the other and this fails."""
    records = load_records(ROOT / "results" / "runs" / f"cpu_lr_grid_{model}64_psmnist")
    scores = {r["config"]["optimizer"]["lr"]: -1.0 if diverged(r) else r["metrics"]["best_val/acc"] for r in records}
    assert sorted(scores) == [0.0003, 0.001, 0.003, 0.01] and {r["seed"] for r in records} == {0}
    chosen = max(sorted(scores), key=scores.get)
    for task in ("psmnist", "smnist"):
        cfg, _ = composed([f"experiment=cpu/table2_{model}64_{task}"])
        assert cfg.optimizer.lr == chosen, f"cpu/table2_{model}64_{task}"
