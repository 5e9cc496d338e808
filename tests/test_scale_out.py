"""Running the protocol elsewhere: Hydra launcher configs, jobs side by side, the make targets' ARGS, and
evaluation of saved checkpoints. The launcher plugins run the installed console script in processes of their own
(`run_cli`); training and evaluating a checkpoint go through `organics_bench.cli:main` in this process."""

import json
import os
import subprocess

import pytest
from hydra import compose, initialize_config_module

from tests.helpers import ROOT, one_line_error, read_metrics, run_cli, run_in_process, smoke_overrides


@pytest.mark.parametrize(
    "launcher,target,key,value",
    [
        ("joblib", "JoblibLauncher", "n_jobs", -1),  # the plugins' own configs; ours: slurm
        ("slurm", "SlurmLauncher", "max_num_timeout", 5),
        ("submitit_local", "LocalLauncher", "tasks_per_node", 1),
    ],
)
def test_every_launcher_config_composes(launcher, target, key, value):
    with initialize_config_module("organics_bench.conf", version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[
                f"hydra/launcher={launcher}",
                "hydra.launcher.timeout_min=5" if launcher != "joblib" else "hydra.launcher.verbose=1",
            ],
            return_hydra_config=True,
        )
    assert cfg.hydra.launcher._target_.endswith(target)
    assert cfg.hydra.launcher[key] == value


def smoke_sweep(tmp_path):
    base = [arg for arg in smoke_overrides("organics", "smnist", tmp_path / "data") if not arg.startswith("model=")]
    return [*base, "diagnostics=none", "model=organics,lstm"]


def sweep_records(tmp_path):
    (sweep,) = (tmp_path / "outputs" / "multiruns" / "smnist").iterdir()
    return sorted((read_metrics(d) for d in sweep.iterdir() if (d / "metrics.json").exists()), key=lambda r: r["model"])


def test_two_jobs_side_by_side_through_joblib_share_the_cores(tmp_path):
    result = run_cli(
        "-m",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        *smoke_sweep(tmp_path),
        "trainer.num_threads=null",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    records = sweep_records(tmp_path)
    assert [r["model"] for r in records] == ["lstm", "organics"] and {r["status"] for r in records} == {"ok"}
    threads = max(1, os.cpu_count() // 2)
    assert all(r["env"]["hardware"].endswith(f"CPU, {threads} threads") for r in records), records[0]["env"]


def test_two_jobs_through_submitit_local(tmp_path):
    result = run_cli("-m", "hydra/launcher=submitit_local", *smoke_sweep(tmp_path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert [(r["model"], r["status"]) for r in sweep_records(tmp_path)] == [("lstm", "ok"), ("organics", "ok")]


def test_make_targets_pass_args_to_every_reproduce_command():
    args = "ARGS=hydra/launcher=slurm hydra.launcher.partition=gpu"
    result = subprocess.run(
        ["make", "-n", "reproduce-table2", "reproduce-table1", "reproduce-table2-cpu", "SEEDS=0,1,2", args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    commands = [line for line in result.stdout.splitlines() if "organics-bench -m experiment=" in line]
    assert len(commands) == 3
    # (the first check once sat in an `or` with just the second, which it implies: SEEDS went unchecked)
    swept = []
    for command in commands:
        assert " seed=0,1,2 " in command, command
        assert command.endswith(" publish=true hydra/launcher=slurm hydra.launcher.partition=gpu"), command
        swept.append(command.split(" experiment=", 1)[1].split(" ", 1)[0].split(","))
    conf = ROOT / "conf" / "experiment"
    assert swept == [
        sorted(f"paper/{p.stem}" for p in (conf / "paper").glob("table2_*.yaml")),
        sorted(f"paper/{p.stem}" for p in (conf / "paper").glob("table1_*.yaml")),
        sorted(f"cpu/{p.stem}" for p in (conf / "cpu").glob("table2_*.yaml")),
    ]  # every row, once


@pytest.fixture
def trained(tmp_path):
    run_dir = tmp_path / "run"
    result = run_in_process(
        *smoke_overrides("organics", "smnist", tmp_path / "data"),
        "diagnostics=none",
        "trainer.epochs=2",
        "trainer.keep_epochs_from=2",
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    return run_dir


@pytest.mark.parametrize("which", ["best.pt", "last.pt", "epoch_0002.pt", "."])
def test_evaluate_a_checkpoint_reproduces_the_runs_numbers(tmp_path, trained, which):
    checkpoint = trained / "checkpoints" / which if which != "." else trained
    out = tmp_path / "eval"
    result = run_in_process(
        "mode=evaluate",
        f"checkpoint={checkpoint}",
        "logger=none",
        f"hydra.run.dir={out}",
        f"paths.data_dir={tmp_path / 'data'}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    evaluation = json.loads((out / "evaluation.json").read_text())
    record = read_metrics(trained)
    assert evaluation["model"] == "organics" and evaluation["task"] == "smnist"
    assert evaluation["config_hash"] == record["config_hash"]
    assert sorted(p.name for p in (trained / "checkpoints").iterdir()) == ["best.pt", "epoch_0002.pt", "last.pt"]
    if which in ("last.pt", "epoch_0002.pt"):
        assert evaluation["metrics"]["test/acc"] == record["metrics"]["last/test_acc"]
        assert evaluation["epoch"] == 2
    else:
        assert evaluation["metrics"]["test/acc"] == record["metrics"]["test/acc"]
        assert evaluation["metrics"]["test/loss"] == record["metrics"]["test/loss"]
        assert evaluation["epoch"] == record["metrics"]["best_epoch"]


def test_evaluate_without_a_checkpoint_is_one_line(tmp_path):
    line = one_line_error(run_in_process("mode=evaluate", "logger=none", cwd=tmp_path))
    assert line.startswith("error: ") and "checkpoint=" in line, line
    assert not (tmp_path / "outputs").exists()
