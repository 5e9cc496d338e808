"""`organics-bench-report`: the table, the diverged fraction and the figure from results records."""

import json
import subprocess
import sys
from pathlib import Path

from hydra import initialize_config_module

from organics_bench.report import experiment_config, main
from organics_bench.training.records import config_hash, git_revision

SCRIPT = Path(sys.executable).parent / "organics-bench-report"


def record(
    model: str,
    seed: int,
    status: str,
    acc: float | None,
    task: str = "smnist",
    units: int = 64,
    lr: float | None = None,
) -> dict:
    config = {"model": {"hidden_size": units}, "task": {"name": task}}
    if lr is not None:
        config["optimizer"] = {"lr": lr}
    return {
        "model": model,
        "task": task,
        "experiment": "exp",
        "seed": seed,
        "status": status,
        "epochs_completed": 2,
        "config": config,
        "n_params": 1234,
        "metrics": {"test/acc": acc, "best_val/acc": acc},
        "time": {"per_epoch_s": 1.5},
        "grad_norm": {"max": 2.0},
        "spectral_radius": {"final": None},
        "command": f"organics-bench model={model} seed={seed}",
        "git_revision": "abc123",
        "env": {"hardware": "test CPU", "torch": "2.x"},
    }


def test_report_counts_diverged_runs_and_writes_table_and_figure(tmp_path, capsys):
    folder = tmp_path / "runs" / "exp"
    for model, seed, status, acc in (
        ("organics", 0, "ok", 0.8),
        ("organics", 1, "ok", 0.6),
        ("ssn", 0, "diverged", None),
        ("ssn", 1, "ok", 0.5),
    ):
        target = folder / model
        target.mkdir(parents=True, exist_ok=True)
        (target / f"seed{seed}.json").write_text(json.dumps(record(model, seed, status, acc)))
        (target / f"seed{seed}.history.csv").write_text(
            "epoch,train_loss,val_acc,grad_norm_max\n1,2.0,0.3,1.0\n2,1.5,0.5,2.0\n"
        )
    main([str(folder), "--table", str(tmp_path / "t.md"), "--figure", str(tmp_path / "f.png")])
    table = (tmp_path / "t.md").read_text()
    organics_hash = config_hash(record("organics", 0, "ok", 0.8)["config"])
    assert f"| exp | smnist | organics | {organics_hash} | 2 | 0 (0%) | 0.7000 |" in table
    assert "| smnist | ssn | " in table and "| 2 | 1 (50%) | 0.5000 |" in table
    assert "`organics-bench model=ssn seed=0` (git abc123, test CPU" in table
    assert (tmp_path / "f.png").stat().st_size > 10_000
    assert "| ssn | smnist | 0 | - | diverged | - |" in capsys.readouterr().out


def test_report_counts_a_run_past_a_gradient_overflow_as_diverged(tmp_path, capsys):
    folder = tmp_path / "runs" / "exp" / "ssn"
    folder.mkdir(parents=True)
    overflowed = record("ssn", 0, "ok", 0.9)
    overflowed["grad_norm"] = {"max": 1.8e19, "nonfinite_steps": 12}  # written before the trainer stopped there
    (folder / "seed0.json").write_text(json.dumps(overflowed))
    (folder / "seed1.json").write_text(json.dumps(record("ssn", 1, "ok", 0.5)))
    main([str(folder.parent), "--table", str(tmp_path / "t.md")])
    assert "| 2 | 1 (50%) | 0.5000 |" in (tmp_path / "t.md").read_text()
    assert "| ssn | smnist | 0 | - | diverged (gradient overflow) | 0.9000 |" in capsys.readouterr().out


def test_report_never_averages_runs_of_different_configs_or_tasks(tmp_path):
    folder = tmp_path / "runs" / "exp"
    runs = (
        ("organics", 0, 0.9, "smnist", 128),
        ("organics", 1, 0.5, "psmnist", 64),
        ("organics", 2, 0.7, "smnist", 64),
    )
    for model, seed, acc, task, units in runs:
        target = folder / model
        target.mkdir(parents=True, exist_ok=True)
        (target / f"seed{seed}.json").write_text(json.dumps(record(model, seed, "ok", acc, task, units)))
    main([str(folder), "--table", str(tmp_path / "t.md")])
    table = (tmp_path / "t.md").read_text()
    assert sum(line.startswith("| exp | ") for line in table.splitlines()) == 3
    for acc in ("0.9000", "0.5000", "0.7000"):  # three groups of one, each its own mean; no 0.7 average of all
        assert f"| 1 | 0 (0%) | {acc} |" in table
    assert "| 3 | 0 (0%) |" not in table


def test_a_learning_rate_grid_gets_an_lr_column_and_one_curve_per_rate(tmp_path, monkeypatch):
    """An lr grid (cpu/lr_grid_*): runs that differ only in lr are told apart in the table and in the figure."""
    folder = tmp_path / "runs" / "grid" / "lstm"
    folder.mkdir(parents=True)
    for i, (lr, acc) in enumerate(((0.0003, 0.6), (0.001, 0.7), (0.003, 0.8), (0.01, 0.5))):
        (folder / f"h{i}").mkdir()
        (folder / f"h{i}" / "seed0.json").write_text(json.dumps(record("lstm", 0, "ok", acc, lr=lr)))
        (folder / f"h{i}" / "seed0.history.csv").write_text("epoch,train_loss,val_acc\n1,2.0,0.3\n2,1.5,0.5\n")
    drawn = {}
    monkeypatch.setattr("organics_bench.report.plot_training_curves", lambda curves, *a, **k: drawn.update(curves))
    main([str(folder.parent), "--table", str(tmp_path / "t.md"), "--figure", str(tmp_path / "f.png")])
    table = (tmp_path / "t.md").read_text()
    for lr, acc in (("0.0003", "0.6000"), ("0.001", "0.7000"), ("0.003", "0.8000"), ("0.01", "0.5000")):
        assert f"| lstm | smnist | 0 | {lr} | ok | {acc} |" in table
    assert sorted(drawn) == [f"lstm (seed 0, lr {lr})" for lr in ("0.0003", "0.001", "0.003", "0.01")]


def test_report_on_an_empty_folder_is_one_line(tmp_path):
    result = subprocess.run([str(SCRIPT), str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.strip().startswith("error: no results records")
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_git_revision_marks_code_changes_dirty_but_not_regenerated_results(tmp_path):
    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "run.json").write_text("{}\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    clean = git_revision(tmp_path / "results")
    assert len(clean) == 40 and not clean.endswith("+dirty")
    (tmp_path / "results" / "run.json").write_text('{"acc": 1}\n')
    assert git_revision(tmp_path) == clean
    (tmp_path / "code.py").write_text("x = 2\n")
    assert git_revision(tmp_path / "results") == clean + "+dirty"


def test_config_hash_ignores_where_and_how_fast_but_not_what_is_computed():
    base = {
        "model": {"hidden_size": 64, "engine": "fused"},
        "task": {"name": "psmnist", "data_dir": "/a"},
        "trainer": {"epochs": 20, "num_threads": 1},
        "optimizer": {"lr": 0.01},
        "scheduler": {},
        "seed": 0,
    }
    same = {
        **base,
        "seed": 3,
        "model": {"hidden_size": 64, "engine": "loop"},
        "task": {"name": "psmnist"},
        "trainer": {"epochs": 20, "num_threads": 2, "device": "cuda", "keep_epochs_from": 15},
    }
    assert config_hash(same) == config_hash(base)
    for section, key, value in (
        ("model", "hidden_size", 128),
        ("task", "name", "smnist"),
        ("trainer", "epochs", 300),
        ("optimizer", "lr", 0.001),
    ):
        changed = {**base, section: {**base[section], key: value}}
        assert config_hash(changed) != config_hash(base), (section, key)


def test_training_curves_mark_the_epochs_whose_values_are_not_finite(tmp_path, monkeypatch):
    from organics_bench import plots

    figures = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, path: figures.append(fig) or path)
    rows = [
        {"epoch": str(e), "train_loss": "0.5", "val_acc": "0.9", "grad_norm_max": g}
        for e, g in ((1, "2.0"), (2, "inf"), (3, "nan"), (4, "1.0"))
    ]
    plots.plot_training_curves({"ssn (seed 1)": rows}, tmp_path / "f.png")
    loss_panel, _, grad_panel = figures[0].axes
    (marks,) = [line for line in grad_panel.lines if line.get_label() == "ssn (seed 1): not finite"]
    assert list(marks.get_xdata()) == [2, 3] and list(marks.get_ydata()) == [1.0, 1.0]
    assert [line.get_label() for line in loss_panel.lines] == ["ssn (seed 1)"]


def composed_config() -> dict:
    with initialize_config_module("organics_bench.conf", version_base="1.3"):
        return experiment_config("paper/table2_organics64_psmnist")


def test_a_resumed_run_names_the_command_that_trains_its_config_from_scratch(tmp_path):
    folder = tmp_path / "runs" / "table2_organics64_psmnist" / "organics"
    folder.mkdir(parents=True)
    resumed = record("organics", 3, "ok", 0.83) | {
        "experiment": "table2_organics64_psmnist",
        "config": composed_config(),
        "command": "organics-bench resume=/gone/snapshot/seed3 trainer.num_threads=1",
    }
    other = resumed | {"seed": 4, "config": composed_config()}
    other["config"]["model"]["hidden_size"] = 32  # no experiment config trains this one
    named = resumed | {
        "seed": 5,
        "command": "organics-bench experiment=paper/table2_organics64_psmnist seed=5 resume=/x",
    }
    for run in (resumed, other, named):
        (folder / f"seed{run['seed']}.json").write_text(json.dumps(run))
    main([str(folder.parent), "--table", str(tmp_path / "t.md")])
    made_by = (tmp_path / "t.md").read_text().split("Made by:")[1]
    assert (
        "seed 3: `organics-bench experiment=paper/table2_organics64_psmnist seed=3`, resumed last by "
        "`organics-bench resume=/gone/snapshot/seed3 trainer.num_threads=1` (git abc123" in made_by
    )
    assert "seed 4: `organics-bench resume=/gone/snapshot/seed3 trainer.num_threads=1` (resumed; no experiment" in (
        made_by
    )
    assert "seed 5: `organics-bench experiment=paper/table2_organics64_psmnist seed=5 resume=/x` (git" in made_by
