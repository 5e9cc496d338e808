"""The command line as a user meets it: help, printing the config, sweeps, and one-line errors on bad input.

`run_cli` starts the installed console script in a process of its own (kept for --help and for the one error whose
stderr must hold nothing else, import-time warnings included); the rest go through the same `organics_bench.cli:main`
in this process (`run_in_process`), which skips the seconds of a fresh Python importing torch and Hydra."""

import pytest

from tests.helpers import one_line_error, read_metrics, run_cli, run_in_process


def test_help_lists_groups_and_choices(tmp_path):
    result = run_cli("--help", cwd=tmp_path)
    assert result.returncode == 0
    for expected in (
        "model: ",
        "conv_organics",
        "organics_fixed_tau",
        "task: adding, cifar10, mnist, parity, psmnist, smnist",
        "organics-bench",
    ):
        assert expected in result.stdout, result.stdout


def test_cfg_job_prints_the_composed_config(tmp_path):
    result = run_in_process("model=lstm", "task=smnist", "--cfg", "job", cwd=tmp_path)
    assert result.returncode == 0
    assert "organics_bench.models.rnn.LSTM" in result.stdout and "name: smnist" in result.stdout
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize(
    "arg,words",
    [
        ("model=transformer", ["unknown model", "lstm", "organics"]),
        ("task=cifar100", ["unknown task", "psmnist", "smnist"]),
    ],
)
def test_unknown_choice_is_one_line_listing_the_choices(tmp_path, arg, words):
    line = one_line_error(run_in_process(arg, cwd=tmp_path))
    assert line.startswith("error: ") and all(word in line for word in words), line
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize(
    "override",
    ["model.hidden_size=0", "optimizer.lr=-0.1", "trainer.batch_size=0", "trainer.epochs=0", "trainer.epochs=abc"],
)
def test_non_positive_settings_are_one_line_errors_and_write_nothing(tmp_path, override):
    run_dir = tmp_path / "run"
    line = one_line_error(run_in_process("debug=smoke", override, f"hydra.run.dir={run_dir}", cwd=tmp_path))
    assert line.startswith(f"error: {override.split('=')[0]} "), line
    assert not run_dir.exists()


@pytest.mark.parametrize("target", ["hydra.run.dir={blocker}/run", "paths.output_dir={blocker}/outputs"])
def test_unwritable_output_dir_is_one_line(tmp_path, target):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    line = one_line_error(run_in_process("debug=smoke", target.format(blocker=blocker), cwd=tmp_path))
    assert "cannot create the output dir" in line and f"{blocker} is a file" in line, line
    assert blocker.read_text() == "not a folder"


def test_default_run_dir_checks_run_without_warnings(tmp_path):
    """A real process: its exit code, and a stderr with nothing but the error (no warning from any import)."""
    result = run_cli("debug=smoke", "trainer.epochs=-1", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == "error: trainer.epochs must be an integer >= 1, got -1", result.stderr
    assert not (tmp_path / "outputs").exists()


def test_missing_data_offline_is_one_line(tmp_path):
    line = one_line_error(
        run_in_process(
            "debug=smoke",
            "task.source=torchvision",
            "task.download=false",
            f"paths.data_dir={tmp_path / 'nodata'}",
            f"hydra.run.dir={tmp_path / 'run'}",
            cwd=tmp_path,
        )
    )
    assert "MNIST not found" in line and "task.source=bundled" in line, line
    assert not (tmp_path / "run").exists()


def test_bad_resume_path_is_one_line(tmp_path):
    line = one_line_error(
        run_in_process(
            "debug=smoke", f"resume={tmp_path / 'nowhere'}", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path
        )
    )
    assert "no checkpoint at" in line and str(tmp_path / "nowhere") in line, line


def test_damaged_checkpoint_is_one_line(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00not a checkpoint")
    line = one_line_error(
        run_in_process("debug=smoke", f"resume={bad}", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    )
    assert "cannot read checkpoint" in line and str(bad) in line, line


def test_multirun_sweeps_two_models(tmp_path):
    result = run_in_process(
        "-m",
        "debug=smoke",
        "model=organics,lstm",
        "task=smnist",
        "task.source=bundled",
        "task.image_size=14",
        "diagnostics=none",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    (sweep,) = (tmp_path / "outputs" / "multiruns" / "smnist").iterdir()
    records = sorted(
        (read_metrics(d) for d in sweep.iterdir() if (d / "metrics.json").exists()), key=lambda r: r["model"]
    )
    assert [(r["model"], r["status"], r["global_step"]) for r in records] == [("lstm", "ok", 2), ("organics", "ok", 2)]


def test_a_native_engine_that_cannot_be_built_is_one_warning_line_and_the_run_goes_on(tmp_path):
    """No C++ compiler: the run trains on the stepped engine after one `warning:` line (no source line, no traceback);
    asking for the native engine explicitly is one `error:` line, exit 2, and no run dir."""
    env = {"CXX": str(tmp_path / "no-such-compiler"), "ORGANICS_BENCH_CACHE": str(tmp_path / "cache")}
    smoke = ["model=organics", "task=smnist", "task.source=bundled", "debug=smoke", "trainer.progress_bar=false"]
    result = run_cli(*smoke, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    said = [line for line in result.stderr.splitlines() if "native time loop unavailable" in line]
    assert said == [
        "warning: ORGaNICs engine: native time loop unavailable (no C++ compiler found (set CXX)); "
        "using the per-step C kernels (RuntimeWarning)"
    ]
    assert "Traceback" not in result.stderr and "native_ops" not in result.stderr
    assert read_metrics(tmp_path / "run")["segments"][0]["engine"] == "cpu-kernels"
    refused = run_cli(*smoke, "model.engine=native", f"hydra.run.dir={tmp_path / 'native'}", cwd=tmp_path, env=env)
    assert refused.returncode == 2
    assert one_line_error(refused) == (
        "error: the native ORGaNICs engine cannot be built here (no C++ compiler found (set CXX)); "
        "use model.engine=fused"
    )
    assert not (tmp_path / "native").exists()
