"""What a new user ran into (issue 22, "Also found"): an unknown key, an output dir that cannot be made, a resumed
or evaluated run's new dir, and a quick start that writes outside the tracked results/ unless asked to publish."""

import os
from pathlib import Path

import pytest

from organics_bench import report
from tests.helpers import one_line_error, run_in_process

SMOKE = ["debug=smoke", "model=lstm", "model.hidden_size=8", "task=smnist", "task.source=bundled", "task.image_size=14"]


@pytest.mark.parametrize(
    ("args", "hint"),
    [
        (["trainer.epoch=3"], "close matches: trainer.epochs"),
        (["-m", "model=lstm,gru", "model.hiden_size=8"], "close matches: model.hidden_size"),
        (["no_such_key=1"], "`organics-bench --cfg job` lists every key"),
    ],
)
def test_an_unknown_key_is_one_line_naming_the_close_matches(tmp_path, args, hint):
    key = args[-1].split("=")[0]
    line = one_line_error(run_in_process("debug=smoke", *args, cwd=tmp_path))
    assert line.startswith(f"error: {key} is not a config key; {hint}"), line
    assert not (tmp_path / "outputs").exists()


def test_keys_that_an_experiment_or_a_config_dir_brings_are_known(tmp_path):
    (tmp_path / "conf" / "model").mkdir(parents=True)
    (tmp_path / "conf" / "model" / "wide_lstm.yaml").write_text("defaults:\n  - lstm\n  - _self_\nhidden_size: 8\n")
    result = run_in_process(
        "--config-dir", "conf", "model=wide_lstm", "experiment=mini/smnist_rows", "task.layout=rows", "--cfg", "job",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "hidden_size: 8" in result.stdout and "layout: rows" in result.stdout


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc")
@pytest.mark.parametrize(("args", "setting"), [([], "hydra.run.dir"), (["-m"], "hydra.sweep.dir")])
def test_an_output_dir_the_file_system_refuses_is_one_line(tmp_path, args, setting):
    key = "hydra.sweep.dir" if args else "hydra.run.dir"
    line = one_line_error(run_in_process(*args, *SMOKE, f"{key}=/proc/organics_bench_test/run", cwd=tmp_path))
    assert line.startswith("error: cannot ") and "/proc/organics_bench_test/run" in line, line
    assert f"choose another {setting} / paths.output_dir" in line, line


def train_smoke_run(tmp_path: Path) -> Path:
    result = run_in_process(*SMOKE, "diagnostics=none", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (run,) = (tmp_path / "outputs" / "runs" / "smnist").iterdir()
    return run


@pytest.mark.parametrize("args", [["resume={run}", "trainer.epochs=2"], ["mode=evaluate", "checkpoint={run}"]])
def test_a_resumed_or_evaluated_run_is_named_after_the_stored_run(tmp_path, args):
    run = train_smoke_run(tmp_path)
    result = run_in_process(*[arg.format(run=run) for arg in args], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.run_dir.parent == run.parent and result.run_dir.name.startswith("lstm_seed0_"), result.run_dir
    assert result.run_dir != run and not (tmp_path / "outputs" / "runs" / "psmnist").exists()


def test_the_quick_start_writes_outside_results_unless_asked_to_publish(tmp_path, capsys):
    """The sweep and report of `make demo` with paths.results_dir=outputs/demo: every record, the table and the
    figure land there, and the tracked results/ of the checkout is not touched."""
    tracked = tmp_path / "results" / "tables" / "mini_smnist_rows.md"
    tracked.parent.mkdir(parents=True)
    tracked.write_text("committed")
    sweep = run_in_process(
        "-m", "experiment=mini/smnist_rows", "model=lstm,gru", "debug=smoke", "model.hidden_size=8",
        "diagnostics=none", "publish=true", "paths.results_dir=outputs/demo",
        cwd=tmp_path,
    )  # fmt: skip
    assert sweep.returncode == 0, sweep.stderr
    demo = tmp_path / "outputs" / "demo"
    report.main(
        [
            str(demo / "runs" / "mini_smnist_rows"),
            f"--table={demo / 'tables' / 'mini_smnist_rows.md'}",
            f"--figure={demo / 'figures' / 'mini_smnist_rows.png'}",
        ]
    )
    table = (demo / "tables" / "mini_smnist_rows.md").read_text()
    assert "| lstm | smnist | 0 | 0.01 | ok |" in table and "| gru | smnist | 0 | 0.01 | ok |" in table  # lr column
    assert (demo / "figures" / "mini_smnist_rows.png").stat().st_size > 0
    assert [p.relative_to(tmp_path) for p in (tmp_path / "results").rglob("*") if p.is_file()] == [
        tracked.relative_to(tmp_path)
    ]
    assert tracked.read_text() == "committed"
