"""Long runs across sessions: snapshots of unfinished runs (organics-bench-snapshot), resuming from one, the engine
segments a run records, and the tables showing a snapshot as in progress, never as a finished seed."""

import contextlib
import csv
import fcntl
import json
import os
import shutil

import pytest

from organics_bench import in_progress, paper_table
from organics_bench.training.records import snapshot_dir
from tests.helpers import read_metrics, run_in_process, smoke_overrides


def read_history(run_dir):
    with (run_dir / "history.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture
def smoke(tmp_path):
    return [*smoke_overrides("organics", "smnist", tmp_path / "data"), "diagnostics=none"]


@pytest.fixture
def interrupted_run(tmp_path, smoke):
    """A run dir as a long run leaves it between epochs: checkpoints, history, metrics.json with status running
    (a finished one-epoch run whose status is set back, as a kill after its checkpoint would leave it)."""
    run_dir = tmp_path / "long"
    result = run_in_process(*smoke, "trainer.epochs=1", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    record = read_metrics(run_dir)
    (run_dir / "metrics.json").write_text(json.dumps(record | {"status": "running"}))
    return run_dir


def test_a_snapshot_resumes_the_run_where_it_stopped(tmp_path, interrupted_run):
    results = tmp_path / "results"
    in_progress.main([str(interrupted_run), "--results-dir", str(results)])
    record = read_metrics(interrupted_run)
    snapshot = results / "in_progress" / record["experiment"] / "seed0"
    assert (snapshot / "checkpoints" / "last.pt").is_file() and (snapshot / "steps.csv").is_file()
    progress = json.loads((snapshot / "progress.json").read_text())
    assert progress["epochs_completed"] == 1 and progress["epochs_planned"] == 1
    evaluation_dir = tmp_path / "evaluation"
    run_in_process("mode=evaluate", f"checkpoint={interrupted_run}", f"hydra.run.dir={evaluation_dir}", cwd=tmp_path)
    expected = json.loads((evaluation_dir / "evaluation.json").read_text())["metrics"]["test/acc"]
    assert progress["best_val_test_acc"] == pytest.approx(expected)
    assert (results / "figures" / f"{record['experiment']}.seed0.in_progress.png").stat().st_size > 10_000
    assert not [p for p in snapshot.parent.iterdir() if p.name.startswith(".")]  # no staging folder left

    resumed = tmp_path / "resumed"
    result = run_in_process(f"resume={snapshot}", "trainer.epochs=2", f"hydra.run.dir={resumed}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    continued = read_metrics(resumed)
    assert continued["epochs_completed"] == 2 and continued["status"] == "ok"
    assert [s["from_epoch"] for s in continued["segments"]] == [0]  # same engine and model code: one segment


def test_publishing_the_finished_run_removes_its_snapshot(tmp_path, smoke):
    """A long run that finishes is published to results/runs/, and its snapshot and in-progress figure go."""
    results, run_dir = tmp_path / "results", tmp_path / "long"
    publish = ("publish=true", f"paths.results_dir={results}")
    result = run_in_process(*smoke, "trainer.epochs=1", *publish, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    record = read_metrics(run_dir)
    shutil.rmtree(results / "runs")  # as if it had been stopped after its last checkpoint, before publishing
    (run_dir / "metrics.json").write_text(json.dumps(record | {"status": "running"}))
    in_progress.main([str(run_dir), "--results-dir", str(results), "--no-evaluate"])
    snapshot = snapshot_dir(results, record["experiment"], 0)
    figure = results / "figures" / f"{record['experiment']}.seed0.in_progress.png"
    assert snapshot.is_dir() and figure.is_file()

    result = run_in_process(f"resume={snapshot}", *publish, f"hydra.run.dir={tmp_path / 'resumed'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    published = results / "runs" / record["experiment"] / record["model"] / record["config_hash"] / "seed0.json"
    assert json.loads(published.read_text())["status"] == "ok"
    assert not snapshot.exists() and not snapshot.parent.exists() and not figure.exists()


def test_a_finished_run_or_a_non_run_is_refused_in_one_line(tmp_path, interrupted_run, capsys):
    record = read_metrics(interrupted_run)
    (interrupted_run / "metrics.json").write_text(json.dumps(record | {"status": "ok"}))
    with pytest.raises(SystemExit) as exit_info:
        in_progress.main([str(interrupted_run), "--results-dir", str(tmp_path / "results"), "--no-evaluate"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "has finished (status ok)" in err and len(err.splitlines()) == 1
    with pytest.raises(SystemExit) as exit_info:
        in_progress.main([str(tmp_path), "--results-dir", str(tmp_path / "results")])
    assert exit_info.value.code == 2
    assert not (tmp_path / "results" / "in_progress").exists()


def test_a_signalled_run_is_snapshotted_and_a_snapshot_never_goes_back(tmp_path, interrupted_run, capsys):
    """A run stopped by SIGTERM or Ctrl-C (status interrupted) is unfinished: it is snapshotted. A run dir behind the
    committed snapshot (the old dir of a run that was resumed elsewhere) is refused in one line, the snapshot kept."""
    results = tmp_path / "results"
    record = read_metrics(interrupted_run)
    (interrupted_run / "metrics.json").write_text(json.dumps(record | {"status": "interrupted"}))
    in_progress.main([str(interrupted_run), "--results-dir", str(results), "--no-evaluate"])
    snapshot = results / "in_progress" / record["experiment"] / "seed0"
    progress = json.loads((snapshot / "progress.json").read_text())
    assert progress["epochs_completed"] == 1
    (snapshot / "progress.json").write_text(json.dumps(progress | {"epochs_completed": 5}))
    with pytest.raises(SystemExit) as exit_info:
        in_progress.main([str(interrupted_run), "--results-dir", str(results), "--no-evaluate"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "is at epoch 5, further than" in err and "nothing replaced" in err and len(err.splitlines()) == 1
    assert json.loads((snapshot / "progress.json").read_text())["epochs_completed"] == 5


def test_all_snapshots_exactly_the_unfinished_run_dirs_under_a_folder(tmp_path, interrupted_run, capsys):
    """make snapshot: `--all DIR` picks the running and interrupted run dirs under DIR and leaves finished ones."""
    results, long_dir = tmp_path / "results", tmp_path / "long_runs"
    record = read_metrics(interrupted_run)
    for name, status, experiment in (("a", "running", "exp_a"), ("b", "interrupted", "exp_b"), ("c", "ok", "exp_c")):
        shutil.copytree(interrupted_run, long_dir / name)
        (long_dir / name / "metrics.json").write_text(json.dumps(record | {"status": status, "experiment": experiment}))
    (long_dir / "d" / "checkpoints").mkdir(parents=True)  # resumed, then stopped before its first epoch ended
    (long_dir / "d" / "metrics.json").write_text(json.dumps(record | {"status": "interrupted", "experiment": "exp_d"}))
    assert in_progress.unfinished_run_dirs(long_dir) == [long_dir / "a", long_dir / "b", long_dir / "d"]
    in_progress.main(["--all", str(long_dir), "--results-dir", str(results), "--no-evaluate"])
    assert sorted(p.name for p in (results / "in_progress").iterdir()) == ["exp_a", "exp_b"]
    assert f"skipped {long_dir / 'd'}: stopped before its first epoch ended" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:  # named explicitly, it is an error
        in_progress.main([str(long_dir / "d"), "--results-dir", str(results)])
    assert exit_info.value.code == 2 and "is not a run dir with a checkpoint" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        in_progress.main(["--all", str(tmp_path / "missing"), "--results-dir", str(results)])
    assert exit_info.value.code == 2 and "no such folder" in capsys.readouterr().err


def _wait_for(run_dir):
    pid = int(run_dir.with_name(run_dir.name + ".pid").read_text())
    with contextlib.suppress(ChildProcessError):  # a child of this process, unless already reaped
        os.waitpid(pid, 0)


def test_resume_starts_every_snapshot_in_the_background(tmp_path, interrupted_run, capsys):
    """make resume-long: each snapshot's run continues detached into <long dir>/<experiment>_seed<k>, with its log and
    pid file, and publishes when it finishes."""
    results, long_dir = tmp_path / "results", tmp_path / "long_runs"
    in_progress.main([str(interrupted_run), "--results-dir", str(results), "--no-evaluate"])
    record = read_metrics(interrupted_run)
    in_progress.main(["--resume", "--results-dir", str(results), "--long-dir", str(long_dir)])
    run_dir = long_dir / f"{record['experiment']}_seed0"
    _wait_for(run_dir)
    assert read_metrics(run_dir)["status"] == "ok"
    assert "resumed from" in run_dir.with_name(run_dir.name + ".log").read_text()
    assert f"-> {run_dir}" in capsys.readouterr().out
    assert not snapshot_dir(results, record["experiment"], 0).exists()  # finished and published: retired


def test_resume_takes_over_a_stopped_run_dir_and_leaves_a_live_or_a_finished_one(tmp_path, interrupted_run, capsys):
    """A run dir the machine's end of day killed (status running, no process holding its lock) is snapshotted if it
    got further than the committed snapshot, moved to <long dir>_ended/ with its log, and resumed; a live run is
    left alone, and so is a finished one."""
    results, long_dir = tmp_path / "results", tmp_path / "long_runs"
    in_progress.main([str(interrupted_run), "--results-dir", str(results), "--no-evaluate"])
    record = read_metrics(interrupted_run)
    snapshot = snapshot_dir(results, record["experiment"], 0)
    run_dir = long_dir / f"{record['experiment']}_seed0"
    shutil.copytree(interrupted_run, run_dir)
    run_dir.with_name(run_dir.name + ".log").write_text("the killed run's log\n")
    resume = ["--resume", "--results-dir", str(results), "--long-dir", str(long_dir)]
    with (run_dir / "run.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        in_progress.main(resume)
    assert f"skipped {snapshot}: {run_dir} is a live run" in capsys.readouterr().out
    assert not run_dir.with_name(run_dir.name + ".pid").exists()  # nothing started

    progress = json.loads((snapshot / "progress.json").read_text())
    (snapshot / "progress.json").write_text(json.dumps(progress | {"epochs_completed": 0}))  # the dir got further
    in_progress.main(resume)
    out = capsys.readouterr().out
    assert "taken from the stopped" in out and "epoch 1, was 0" in out and f"moved the stopped {run_dir}" in out
    (aside,) = [p for p in (tmp_path / "long_runs_ended").iterdir() if p.is_dir()]
    assert aside.with_name(aside.name + ".log").read_text() == "the killed run's log\n"
    _wait_for(run_dir)
    assert read_metrics(run_dir)["status"] == "ok" and not snapshot.exists()  # resumed, finished, published

    in_progress.main([str(interrupted_run), "--results-dir", str(results), "--no-evaluate"])
    in_progress.main(resume)
    assert f"skipped {snapshot}: {run_dir} has finished (status ok)" in capsys.readouterr().out


def test_resume_of_named_runs_starts_only_those_and_refuses_a_name_without_a_snapshot(tmp_path, monkeypatch, capsys):
    """make resume-long RUNS="...": only the named snapshots resume (a folder prefix such as paper/ is ignored); a name
    with no snapshot stops everything before anything starts."""
    launched = []
    monkeypatch.setattr(in_progress, "_launch", lambda overrides, run_dir, *_: launched.append(run_dir.name) or 7)
    results, long_dir = tmp_path / "results", tmp_path / "long"
    for name in ("table2_lstm64_psmnist", "table2_organics_fixed_tau64_psmnist"):
        (results / "in_progress" / name / "seed0").mkdir(parents=True)
        (results / "in_progress" / name / "seed0" / "progress.json").write_text(json.dumps({"epochs_completed": 3}))
    resume = ["--results-dir", str(results), "--long-dir", str(long_dir), "--resume"]
    with pytest.raises(SystemExit) as exit_info:
        in_progress.main([*resume, "paper/table2_lstm64_psmnist", "table2_nope"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith("error: no snapshot of table2_nope") and "\n" == err[-1]
    assert launched == []
    in_progress.main([*resume, "paper/table2_lstm64_psmnist"])
    assert launched == ["table2_lstm64_psmnist_seed0"]
    in_progress.main(resume)
    assert launched == [
        "table2_lstm64_psmnist_seed0",
        "table2_lstm64_psmnist_seed0",
        "table2_organics_fixed_tau64_psmnist_seed0",
    ]


def test_start_launches_each_new_long_run_refuses_an_unknown_experiment_and_skips_a_taken_dir(
    tmp_path, monkeypatch, capsys
):
    """make start-long: each experiment starts detached into <long dir>/<its file name>_seed<k> (the launch itself is
    resume-long's, run for real above); a typo stops everything before anything starts."""
    launched = []
    monkeypatch.setattr(
        in_progress, "_launch", lambda overrides, run_dir, *_: launched.append((overrides, run_dir)) or 7
    )
    long_dir, results = tmp_path / "long", tmp_path / "results"
    with pytest.raises(SystemExit) as exit_info:
        in_progress.main(["--start", "paper/table2_lstm64_psmnist", "paper/nope", "--long-dir", str(long_dir)])
    assert exit_info.value.code == 2 and "unknown experiment paper/nope" in capsys.readouterr().err
    assert launched == []
    (long_dir / "table2_organics_fixed_tau64_psmnist_seed3").mkdir(parents=True)
    args = ["--start", "paper/table2_lstm64_psmnist", "paper/table2_organics_fixed_tau64_psmnist", "--seed", "3"]
    in_progress.main([*args, "--long-dir", str(long_dir), "--results-dir", str(results)])
    assert launched == [
        (["experiment=paper/table2_lstm64_psmnist", "seed=3"], long_dir / "table2_lstm64_psmnist_seed3")
    ]
    out = capsys.readouterr().out
    assert "skipped paper/table2_organics_fixed_tau64_psmnist" in out and "(pid 7," in out


def test_status_shows_each_long_run_s_epoch_pace_time_left_and_whether_it_is_live(tmp_path, interrupted_run, capsys):
    """make long-status: a run is live while a process holds its run dir's lock; one that says running without it
    was killed. The pace is the median of the last epochs (one paused for `make test` does not set it)."""
    long_dir = tmp_path / "long_runs"
    for name in ("live", "killed"):
        shutil.copytree(interrupted_run, long_dir / name)
    (long_dir / "starting").mkdir()
    record = read_metrics(interrupted_run)
    (long_dir / "live" / "metrics.json").write_text(json.dumps(record | {"epochs_planned": 11}))
    (long_dir / "live.pid").write_text("4242\n")
    with (long_dir / "live" / "run.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # as the live run holds it
        in_progress.main(["--status", "--long-dir", str(long_dir)])
    rows = {line.split(" | ")[0][2:]: line.split(" | ") for line in capsys.readouterr().out.splitlines()[2:]}
    epoch_time = float(read_history(interrupted_run)[-1]["epoch_time_s"])
    assert rows["live"][1:3] == ["running", "1/11"] and float(rows["live"][3]) == pytest.approx(epoch_time, abs=0.5)
    assert rows["live"][4] == f"{int(10 * epoch_time // 3600)} h {int(10 * epoch_time % 3600 // 60):02d} min"
    assert rows["live"][6].strip(" |") == "live (pid 4242)"
    assert rows["killed"][1].startswith("stopped (its process ended") and rows["killed"][4] == "—"
    assert rows["killed"][6].strip(" |") == "ended"
    assert rows["starting"][1] == "starting (no epoch yet)"


def test_resuming_with_another_engine_says_so_and_records_both(tmp_path, smoke):
    first, second = tmp_path / "first", tmp_path / "second"
    result = run_in_process(*smoke, "trainer.epochs=1", "model.engine=stepped", f"hydra.run.dir={first}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    result = run_in_process(
        f"resume={first}", "trainer.epochs=2", "model.engine=fused", f"hydra.run.dir={second}", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    said = [line for line in (result.stdout + result.stderr).splitlines() if "trained by engine cpu-kernels" in line]
    assert len(said) == 1 and "with engine native" in said[0] and "at epoch 1" in said[0]
    segments = read_metrics(second)["segments"]
    assert [(s["from_epoch"], s["engine"]) for s in segments] == [(0, "cpu-kernels"), (1, "native")]
    assert segments[0]["model_code"] == segments[1]["model_code"]


def test_the_paper_table_shows_a_snapshot_as_in_progress_never_as_a_seed(tmp_path):
    (experiment,) = [e for e in paper_table.paper_experiments() if e.name == "table2_organics64_psmnist"]
    results = tmp_path / "results"
    snapshot = snapshot_dir(results, experiment.name, 0)
    snapshot.mkdir(parents=True)
    progress = {
        "seed": 0,
        "config_hash": experiment.hash,
        "epochs_completed": 42,
        "epochs_planned": 300,
        "best_epoch": 40,
        "best_val_test_acc": 0.8123,
    }
    (snapshot / "progress.json").write_text(json.dumps(progress))
    row = paper_table.table_row(experiment, results)
    assert row["ours"] == "in progress: epoch 42/300, best-val test so far 81.23 (epoch 40)"
    assert row["seeds (diverged)"] == "-" and row["delta"] == "-"

    finished = results / "runs" / experiment.name / "organics" / experiment.hash
    finished.mkdir(parents=True)
    record = {
        "model": "organics",
        "config": experiment.config,
        "status": "ok",
        "seed": 1,
        "metrics": {"test/acc": 0.9},
        "epochs_completed": 300,
        "time": {"per_epoch_s": 60.0},
        "env": {"hardware": "cpu", "torch": "2"},
        "n_params": 25674,
    }
    (finished / "seed1.json").write_text(json.dumps(record))
    row = paper_table.table_row(experiment, results)
    assert row["ours"].startswith("90.00 ± 0.00; in progress: epoch 42/300")
    assert row["seeds (diverged)"] == "1 (0)" and row["delta"] == "+0.10"  # the paper's protocol: 90.00 - 89.9
    shutil.rmtree(snapshot)
    assert paper_table.table_row(experiment, results)["ours"] == "90.00 ± 0.00"


def test_reduced_rows_get_no_delta_and_the_paper_s_pairs_are_compared_at_equal_scale(tmp_path):
    experiments = paper_table.paper_experiments()
    by_name = {e.name: e for e in experiments}
    results = tmp_path / "results"
    accuracies = {"cpu_table2_organics64_psmnist": [0.80, 0.82, 0.81], "cpu_table2_lstm64_psmnist": [0.70, 0.90]}
    for name, accs in accuracies.items():
        folder = results / "runs" / name / "m" / by_name[name].hash
        folder.mkdir(parents=True)
        for seed, acc in enumerate(accs):
            record = {
                "model": "m",
                "config": by_name[name].config,
                "status": "ok",
                "seed": seed,
                "metrics": {"test/acc": acc},
                "epochs_completed": 20,
                "time": {"per_epoch_s": 1.0},
                "env": {"hardware": "cpu", "torch": "2"},
                "n_params": 1,
            }
            (folder / f"seed{seed}.json").write_text(json.dumps(record))
    row = paper_table.table_row(by_name["cpu_table2_organics64_psmnist"], results)
    assert row["ours"] == "81.00 ± 1.00" and row["delta"] == "-"  # reduced protocol: no delta against the paper
    (pair,) = paper_table.comparisons(experiments, results)
    assert pair["difference"] == "+1.00" and pair["seeds"] == "3 vs 2"
    assert pair["exceeds the spread over seeds"] == "no"  # 1.00 < the LSTM's std of 14.14


def test_skip_published_leaves_a_job_with_a_committed_snapshot_to_resume_long(tmp_path, interrupted_run, smoke):
    """A long sweep on a fresh checkout (`make table2-cpu-seeds`) must not start afresh a run that a committed
    snapshot continues: with skip_published=true the job trains nothing and names the snapshot."""
    results = tmp_path / "results"
    in_progress.main([str(interrupted_run), "--results-dir", str(results)])
    snapshot = snapshot_dir(results, read_metrics(interrupted_run)["experiment"], 0)
    committed = (snapshot / "checkpoints" / "last.pt").read_bytes()
    sweep = tmp_path / "sweep"
    args = [*smoke, "trainer.epochs=1", "publish=true", "skip_published=true", f"paths.results_dir={results}"]
    result = run_in_process("-m", *args, "seed=0,1", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(f"in progress in a snapshot: {snapshot}") == 1
    assert [p.parent.name for p in sweep.rglob("metrics.json")] == ["1_organics_seed1"]
    assert (snapshot / "checkpoints" / "last.pt").read_bytes() == committed
