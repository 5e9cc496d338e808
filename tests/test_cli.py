"""The command line as a user meets it: help, printing the config, sweeps, and one-line errors on bad input."""
import pytest

from tests.helpers import read_metrics, run_cli


def test_help_lists_groups_and_choices(tmp_path):
    result = run_cli("--help", cwd=tmp_path)
    assert result.returncode == 0
    for expected in ("model: ", "conv_organics", "organics_fixed_tau", "task: cifar10, mnist, parity, psmnist, smnist",
                     "organics-bench"):
        assert expected in result.stdout, result.stdout


def test_cfg_job_prints_the_composed_config(tmp_path):
    result = run_cli("model=lstm", "task=smnist", "--cfg", "job", cwd=tmp_path)
    assert result.returncode == 0
    assert "organics_bench.models.rnn.LSTM" in result.stdout and "name: smnist" in result.stdout
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("arg,words", [("model=transformer", ["unknown model", "lstm", "organics"]),
                                       ("task=cifar100", ["unknown task", "psmnist", "smnist"])])
def test_unknown_choice_is_one_line_listing_the_choices(tmp_path, arg, words):
    result = run_cli(arg, cwd=tmp_path)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and all(word in lines[0] for word in words), result.stderr


@pytest.mark.parametrize("override", ["model.hidden_size=0", "optimizer.lr=-0.1", "trainer.batch_size=0",
                                      "trainer.epochs=0", "trainer.epochs=abc"])
def test_non_positive_settings_are_one_line_errors_and_write_nothing(tmp_path, override):
    run_dir = tmp_path / "run"
    result = run_cli("debug=smoke", override, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and override.split("=")[0] in lines[0], result.stderr
    assert not run_dir.exists()


@pytest.mark.parametrize("target", ["hydra.run.dir={blocker}/run", "paths.output_dir={blocker}/outputs"])
def test_unwritable_output_dir_is_one_line(tmp_path, target):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    result = run_cli("debug=smoke", target.format(blocker=blocker), cwd=tmp_path)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "output dir" in lines[0], result.stderr


def test_default_run_dir_checks_run_without_warnings(tmp_path):
    result = run_cli("debug=smoke", "trainer.epochs=-1", cwd=tmp_path)
    assert result.returncode != 0
    assert result.stderr.strip() == "error: trainer.epochs must be an integer >= 1, got -1", result.stderr
    assert not (tmp_path / "outputs").exists()


def test_missing_data_offline_is_one_line(tmp_path):
    result = run_cli("debug=smoke", "task.source=torchvision", "task.download=false",
                     f"paths.data_dir={tmp_path / 'nodata'}", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "MNIST not found" in lines[0] and "task.source=bundled" in lines[0]
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_bad_resume_path_is_one_line(tmp_path):
    result = run_cli("debug=smoke", f"resume={tmp_path / 'nowhere'}", f"hydra.run.dir={tmp_path / 'run'}",
                     cwd=tmp_path)
    assert result.returncode != 0
    assert "no checkpoint at" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_damaged_checkpoint_is_one_line(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00not a checkpoint")
    result = run_cli("debug=smoke", f"resume={bad}", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert result.returncode != 0
    assert "cannot read checkpoint" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_multirun_sweeps_two_models(tmp_path):
    result = run_cli("-m", "debug=smoke", "model=organics,lstm", "task=smnist", "task.source=bundled",
                     "task.image_size=14", "diagnostics=none", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (sweep,) = (tmp_path / "outputs" / "multiruns" / "smnist").iterdir()
    records = sorted(read_metrics(d)["model"] for d in sweep.iterdir() if (d / "metrics.json").exists())
    assert records == ["lstm", "organics"]
