"""Nothing lost, nothing half-written, nothing silently wrong: bad input, divergence, resume, SIGTERM, concurrent
runs and published records, through the command line: `organics_bench.cli:main` in this process (`run_in_process`),
and the installed console script in processes of their own (`run_cli`, `SCRIPT`) where a signal or a second live
process is the point."""

import csv
import fcntl
import json
import math
import os
import shutil
import signal
import subprocess
import time

import numpy as np
import pytest
import torch

from organics_bench.config_checks import validate
from organics_bench.errors import UserError
from organics_bench.io import write_json_atomic
from tests.helpers import (
    SCRIPT,
    composed_config,
    one_line_error,
    read_metrics,
    run_in_process,
    smoke_overrides,
    write_fake_mnist,
    write_idx,
)


@pytest.fixture
def smoke(tmp_path):
    return [*smoke_overrides("organics", "smnist", tmp_path / "data"), "diagnostics=none"]


def rows(path):
    with path.open() as handle:
        return list(csv.DictReader(handle))


def strict_json(path):
    """json.loads that refuses NaN / Infinity, which are not JSON."""

    def refuse(constant):
        raise ValueError(f"{constant} in {path}")

    return json.loads(path.read_text(), parse_constant=refuse)


# ----- bad input ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "overrides,key",
    [
        (["seed=-1"], "seed"),
        (["model.dt_tau_max_y=-0.1"], "model.dt_tau_max_y"),
        (["optimizer.weight_decay=-1"], "optimizer.weight_decay"),
        (["scheduler.step_size=0"], "scheduler.step_size"),
        (["trainer.epochs=2.5"], "trainer.epochs"),
        (["trainer.device=gpu0"], "trainer.device"),
        (["trainer.flush_denormal=3"], "trainer.flush_denormal"),
        (["diagnostics.spectra_at=[0.5,2]"], "diagnostics.spectra_at"),
        (["model=ssn", "model.n_excitatory=0"], "model.n_excitatory"),
        (["model.hidden_size=8.5"], "model.hidden_size"),
        (["+model.no_such_setting=1"], "model.no_such_setting"),
        (["+trainer.clip=1"], "trainer.clip"),
        (["task.permutation_seed=-3"], "task.permutation_seed"),
        (["task.layout=diagonal"], "task.layout"),
        (["model.recurrence=bogus"], "recurrence"),
    ],
)
def test_every_key_has_a_type_and_range(overrides, key):
    cfg = composed_config(overrides)
    with pytest.raises(UserError) as caught:
        validate(cfg, cfg.hydra.runtime.choices.model)
    assert key in str(caught.value) and "\n" not in str(caught.value)


def test_every_paper_experiment_validates():
    for experiment in ("paper/table1_organics_static_2layer", "cpu/table2_ssn64_psmnist", "extension/parity"):
        cfg = composed_config([f"experiment={experiment}"])
        validate(cfg, cfg.hydra.runtime.choices.model)


@pytest.mark.parametrize(
    "override,words",
    [
        ("task.layout=diagonal", ["task.layout", "pixels"]),  # a UserError raised inside Hydra's instantiate
        ("model.recurrence=bogus", ["model:", "recurrence"]),  # a model option's ValueError
        ("trainer.epochs=2.5", ["trainer.epochs", "integer"]),
    ],
)
def test_bad_values_are_one_line_exit_2_and_leave_no_run_dir(tmp_path, smoke, override, words):
    result = run_in_process(*smoke, override, cwd=tmp_path)
    line = one_line_error(result)
    assert all(word in line for word in words), line
    assert not (tmp_path / "outputs").exists()


def test_a_multirun_job_with_bad_input_leaves_no_job_dir(tmp_path, smoke):
    result = run_in_process("-m", *smoke, "task.layout=diagonal", cwd=tmp_path)
    assert "task.layout" in one_line_error(result)
    sweeps = list((tmp_path / "outputs" / "multiruns").rglob("*_seed0"))
    assert sweeps == []


def test_unknown_choice_in_a_sweep_list_is_one_line_error(tmp_path):
    line = one_line_error(run_in_process("-m", "debug=smoke", "model=lstm,nosuch", cwd=tmp_path))
    assert "unknown model 'nosuch'" in line and "lstm" in line


def test_a_user_config_dir_adds_model_choices(tmp_path, smoke):
    conf = tmp_path / "myconf" / "model"
    conf.mkdir(parents=True)
    (conf / "tiny_lstm.yaml").write_text("_target_: organics_bench.models.rnn.LSTM\nhidden_size: 6\n")
    run_dir = tmp_path / "run"
    result = run_in_process(
        "--config-dir", str(tmp_path / "myconf"), *smoke, "model=tiny_lstm", f"hydra.run.dir={run_dir}", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert read_metrics(run_dir)["config"]["model"]["hidden_size"] == 8  # smoke's model.hidden_size=8 applies


def test_mnist_files_with_mismatched_counts_are_one_line_error(tmp_path):
    data = tmp_path / "data"
    write_fake_mnist(data, n_train=120, n_test=40)
    write_idx(data / "MNIST" / "raw" / "train-labels-idx1-ubyte", np.zeros(100, dtype=np.uint8))
    result = run_in_process(
        "debug=smoke",
        "task=smnist",
        "task.source=torchvision",
        "task.download=false",
        f"paths.data_dir={data}",
        "model.hidden_size=8",
        "task.val_size=20",
        cwd=tmp_path,
    )
    line = one_line_error(result)
    assert "120 images" in line and "100 labels" in line, line
    assert not (tmp_path / "outputs").exists()


def test_unusable_results_dir_is_found_before_training(tmp_path, smoke):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    result = run_in_process(*smoke, "publish=true", f"paths.results_dir={blocker}/results", cwd=tmp_path)
    # (it once also passed on any line holding "results", which the path in every such line does)
    assert one_line_error(result) == (
        f"error: cannot create the output dir {blocker}/results: {blocker} is a file; choose another paths.results_dir"
    )
    assert not (tmp_path / "outputs").exists()


# ----- divergence ----------------------------------------------------------------------------------------------------
def test_divergence_in_epoch_one_is_published_and_exits_0(tmp_path, smoke):
    results = tmp_path / "results"
    result = run_in_process(
        "-m",
        *smoke,
        "optimizer.lr=1e12,1e-3",
        "trainer.flush_denormal=false",
        "publish=true",
        f"paths.results_dir={results}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "DIVERGED at step" in result.stdout
    records = {str(path.relative_to(results)): strict_json(path) for path in results.rglob("seed0.json")}
    assert len(records) == 2, records.keys()  # two configs under one seed: two records, none overwritten
    diverged = [r for r in records.values() if r["status"] == "diverged"]
    assert len(diverged) == 1 and diverged[0]["diverged_at"]["epoch"] == 1
    assert diverged[0]["metrics"]["best_val/acc"] is None
    assert len({r["config_hash"] for r in records.values()}) == 2


def test_json_files_never_hold_nan(tmp_path):
    path = tmp_path / "x.json"
    write_json_atomic({"a": math.nan, "b": [math.inf, -math.inf, 1.5]}, path)
    assert strict_json(path) == {"a": "nan", "b": ["inf", "-inf", 1.5]}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


# ----- resume and stops ---------------------------------------------------------------------------------------------
def test_sigterm_then_requeue_into_the_same_dir_matches_an_uninterrupted_run(tmp_path, smoke):
    args = [*smoke, "trainer.epochs=40", "trainer.limit_train_batches=1"]
    straight, requeued = tmp_path / "straight", tmp_path / "requeued"
    assert run_in_process(*args, f"hydra.run.dir={straight}", cwd=tmp_path).returncode == 0
    env = {**os.environ, "WANDB_MODE": "disabled", "TQDM_DISABLE": "1"}
    process = subprocess.Popen(
        [str(SCRIPT), *args, f"hydra.run.dir={requeued}"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 240
    while not (requeued / "checkpoints" / "last.pt").exists() and time.time() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr
    assert f"hydra.run.dir={requeued}" in stderr
    interrupted = read_metrics(requeued)
    assert interrupted["status"] == "interrupted" and 1 <= interrupted["epochs_completed"] < 40
    result = run_in_process(*args, f"hydra.run.dir={requeued}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert rows(requeued / "history.csv") == [
        {**row, "epoch_time_s": new["epoch_time_s"]}
        for row, new in zip(rows(straight / "history.csv"), rows(requeued / "history.csv"))
    ]
    assert len(rows(requeued / "history.csv")) == 40
    steps = [row["step"] for row in rows(requeued / "steps.csv")]
    assert steps == [str(k) for k in range(1, 41)]
    assert read_metrics(requeued)["metrics"] == read_metrics(straight)["metrics"]


def test_a_sweep_run_again_into_its_sweep_dir_continues_the_unfinished_jobs_and_skips_the_finished(tmp_path, smoke):
    """How the long make targets (parity, adding, the CPU-scale grids) resume after a crash or a session's end: the
    same multirun into the same hydra.sweep.dir continues each unfinished job from its last.pt and trains nothing
    for a finished one (its record is published again, unchanged)."""
    sweep, results = tmp_path / "sweep", tmp_path / "results"
    args = ["-m", *smoke, "seed=0,1", "trainer.epochs=2", f"hydra.sweep.dir={sweep}", "publish=true"]
    args += [f"paths.results_dir={results}"]
    assert run_in_process(*args, cwd=tmp_path).returncode == 0
    first, second = sorted(sweep.glob("*_seed*"))
    finished = read_metrics(first)
    steps_before = (first / "steps.csv").read_text()
    (second / "metrics.json").write_text(json.dumps(read_metrics(second) | {"status": "interrupted"}))
    shutil.rmtree(results)

    result = run_in_process(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("already finished (status ok)") == 1 and f"{first}" in result.stdout
    assert read_metrics(first) == finished and (first / "steps.csv").read_text() == steps_before
    assert read_metrics(second)["status"] == "ok" and read_metrics(second)["epochs_completed"] == 2
    assert sorted(p.name for p in results.rglob("seed*.json")) == ["seed0.json", "seed1.json"]


def test_skip_published_trains_only_the_jobs_whose_record_is_not_yet_published(tmp_path, smoke):
    """How a long sweep continues on a fresh checkout (no sweep dir left): with skip_published=true a job whose
    record for the same config and seed is already in results/ trains nothing; another seed or config trains."""
    results = tmp_path / "results"
    common = [*smoke, "trainer.epochs=1", "publish=true", f"paths.results_dir={results}"]
    first = run_in_process("-m", *common, "seed=0", f"hydra.sweep.dir={tmp_path / 'first'}", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    (record,) = results.rglob("seed0.json")
    published = record.read_text()

    again = ["-m", *common, "skip_published=true", f"hydra.sweep.dir={tmp_path / 'again'}"]
    result = run_in_process(*again, "seed=0,1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("already published:") == 1 and f"{record}" in result.stdout
    assert record.read_text() == published
    assert [p.parent.name for p in (tmp_path / "again").rglob("metrics.json")] == ["1_organics_seed1"]
    assert sorted(p.name for p in results.rglob("seed*.json")) == ["seed0.json", "seed1.json"]

    changed_sweep = f"hydra.sweep.dir={tmp_path / 'changed'}"
    changed = run_in_process(*again[:-1], changed_sweep, "seed=0", "optimizer.lr=0.002", cwd=tmp_path)
    assert changed.returncode == 0 and "already published" not in changed.stdout
    assert len(list(results.rglob("seed0.json"))) == 2


def test_sigterm_before_the_first_checkpoint_prints_no_resume_command(tmp_path, smoke):
    run_dir = tmp_path / "run"
    env = {**os.environ, "WANDB_MODE": "disabled", "TQDM_DISABLE": "1"}
    process = subprocess.Popen(
        [str(SCRIPT), *smoke, "trainer.limit_train_batches=null", f"hydra.run.dir={run_dir}"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while not (run_dir / "config.yaml").exists() and time.time() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143
    assert "nothing to resume" in stderr and "resume=" not in stderr


@pytest.fixture
def finished_run(tmp_path, smoke):
    run_dir = tmp_path / "first"
    result = run_in_process(*smoke, "trainer.epochs=1", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    return run_dir


def test_resume_takes_the_runs_stored_config(tmp_path, finished_run):
    """The run's own config for what it computes; publish (what to do with the run) may be turned on."""
    resumed, results = tmp_path / "resumed", tmp_path / "results"
    result = run_in_process(
        f"resume={finished_run}",
        "trainer.epochs=2",
        "logger=none",
        f"hydra.run.dir={resumed}",
        "trainer.progress_bar=false",
        "publish=true",
        f"paths.results_dir={results}",
        cwd=tmp_path,
    )  # no model=, task= or smoke sizes given; the first run was not published
    assert result.returncode == 0, result.stderr
    record = read_metrics(resumed)
    assert record["model"] == "organics" and record["task"] == "smnist" and record["epochs_completed"] == 2
    assert record["config"]["model"]["hidden_size"] == 8 and record["config"]["trainer"]["limit_train_batches"] == 2
    assert (resumed / "checkpoints" / "best.pt").exists()
    assert [row["step"] for row in rows(resumed / "steps.csv")] == ["1", "2", "3", "4"]
    (published,) = results.glob("runs/*/organics/*/seed0.json")
    assert json.loads(published.read_text())["epochs_completed"] == 2


@pytest.mark.parametrize("override", ["optimizer.lr=0.5", "seed=1", "trainer.batch_size=4", "task=psmnist"])
def test_resume_refuses_an_override_that_changes_the_run(tmp_path, smoke, finished_run, override):
    args = [arg for arg in smoke if not (override.startswith("task=") and arg.startswith("task="))]
    line = one_line_error(
        run_in_process(*args, f"resume={finished_run}", override, f"hydra.run.dir={tmp_path / 'r'}", cwd=tmp_path)
    )
    assert override.split("=")[0] in line and "resumed" in line
    assert not (tmp_path / "r").exists()


def test_resume_from_best_pt_is_one_line_error(tmp_path, smoke, finished_run):
    line = one_line_error(run_in_process(*smoke, f"resume={finished_run / 'checkpoints' / 'best.pt'}", cwd=tmp_path))
    assert "best.pt" in line and "last.pt" in line


# ----- concurrent runs and published records --------------------------------------------------------------------------
def test_a_run_dir_held_by_a_live_run_is_refused(tmp_path, smoke):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with (run_dir / "run.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        line = one_line_error(run_in_process(*smoke, f"hydra.run.dir={run_dir}", cwd=tmp_path))
    assert "in use by another live run" in line
    assert sorted(p.name for p in run_dir.iterdir()) == ["run.lock"]


def test_a_run_dir_of_another_config_is_refused(tmp_path, smoke, finished_run):
    before = {p.name: p.stat().st_mtime_ns for p in finished_run.rglob("*")}
    line = one_line_error(
        run_in_process(*smoke, "trainer.epochs=1", "seed=1", f"hydra.run.dir={finished_run}", cwd=tmp_path)
    )
    assert "another config or seed" in line
    assert {p.name: p.stat().st_mtime_ns for p in finished_run.rglob("*")} == before


def test_runs_started_together_get_their_own_dirs(tmp_path, smoke):
    env = {**os.environ, "WANDB_MODE": "disabled", "TQDM_DISABLE": "1"}
    processes = [
        subprocess.Popen([str(SCRIPT), *smoke], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    assert [p.wait(timeout=300) for p in processes] == [0, 0]
    run_dirs = list((tmp_path / "outputs" / "runs" / "smnist").iterdir())
    assert len(run_dirs) == 2
    for run_dir in run_dirs:
        assert len(rows(run_dir / "steps.csv")) == 2


def test_a_plain_run_never_touches_results(tmp_path, smoke):
    plain = [arg for arg in smoke if not arg.startswith("paths.results_dir")]
    assert run_in_process(*plain, "paths.results_dir=${hydra:runtime.cwd}/results", cwd=tmp_path).returncode == 0
    assert not (tmp_path / "results").exists()
    assert (
        run_in_process(
            *plain, "paths.results_dir=${hydra:runtime.cwd}/results", "publish=true", cwd=tmp_path
        ).returncode
        == 0
    )
    (record,) = (tmp_path / "results" / "runs" / "smnist" / "organics").glob("*/seed0.json")
    assert strict_json(record)["config_hash"] == record.parent.name


class FiniteLossBadGradient(torch.nn.Module):
    """A finite loss (w = 0 adds nothing to it) whose gradient in w is `kind`: nan (0 * sqrt(w), 0 * inf), or
    about 1e29 per entry (1e30 * w): finite, but its square overflows float32, as in Adam's second moment."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind
        self.w = torch.nn.Parameter(torch.zeros(3))
        self.readout_layer = torch.nn.Linear(2, 2)

    def forward(self, x):
        extra = 0 * torch.sqrt(self.w).sum() if self.kind == "nan" else (1e30 * self.w).sum()
        return self.readout_layer(x) + torch.stack([extra, torch.zeros(())])  # one logit: CE is shift-invariant

    def loss(self, x, y, criterion=torch.nn.functional.cross_entropy):
        logits = self(x)
        return criterion(logits, y), logits


@pytest.mark.parametrize(("kind", "nonfinite_entries"), [("nan", 3), ("overflowing", 0)])
def test_a_bad_gradient_with_a_finite_loss_is_a_divergence_not_a_crash(tmp_path, kind, nonfinite_entries):
    from organics_bench.settings import TrainerSettings
    from organics_bench.tasks.base import Split, TaskData
    from organics_bench.training.records import RunRecord
    from organics_bench.training.trainer import Trainer

    split = Split(torch.randn(8, 2), torch.randint(0, 2, (8,)))
    model = FiniteLossBadGradient(kind)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    trainer = Trainer(
        model,
        TaskData(split, split, split),
        optimizer,
        torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0),
        TrainerSettings(epochs=2, batch_size=4, progress_bar=False, device="cpu"),
        tmp_path,
        RunRecord(
            experiment="e",
            model="m",
            task="t",
            seed=0,
            config={},
            n_params=1,
            provenance={"command": "", "git_revision": "", "external_code": [], "env": {}},
            epochs_planned=2,
        ),
    )
    summary = trainer.fit()
    assert summary["status"] == "diverged"
    assert summary["diverged_at"]["step"] == 1 and summary["diverged_at"]["nonfinite_grads"] == nonfinite_entries
    assert math.isfinite(float(summary["diverged_at"]["loss"]))
    assert torch.equal(model.w.detach(), torch.zeros(3))  # the step was never taken
