"""`organics_bench.run`: a job from Python through the command line's own path, its record returned, bad input
raised as `UserError` with nothing written, and the process's torch and logging state left as it was."""

import json
import logging
from pathlib import Path

import pytest
import torch

import organics_bench
from organics_bench.errors import UserError

SMOKE = ["debug=smoke", "model=lstm", "model.hidden_size=8", "task=smnist", "task.source=bundled", "logger=none"]


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TQDM_DISABLE", "1")
    return tmp_path


def test_run_returns_the_record_it_wrote(in_tmp):
    handlers = logging.getLogger().handlers[:]
    torch.set_num_threads(2)
    record = organics_bench.run([*SMOKE, "task.image_size=14", "diagnostics=none", "trainer.num_threads=1"])
    run_dir = Path(record.pop("run_dir"))
    assert run_dir.parent == in_tmp / "outputs" / "runs" / "smnist" and run_dir.name.startswith("lstm_seed0_")
    assert record == json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "ok" and record["model"] == "lstm" and record["epochs_completed"] == 1
    assert record["command"].startswith("organics-bench debug=smoke model=lstm")
    assert (run_dir / ".hydra" / "config.yaml").is_file() and (run_dir / "checkpoints" / "best.pt").is_file()
    assert torch.get_num_threads() == 2 and logging.getLogger().handlers == handlers


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        (["trainer.epochs=0"], "trainer.epochs must be an integer >= 1"),
        (["trainer.epoch=3"], "close matches: trainer.epochs"),
        (["model=transformer"], "unknown model 'transformer'"),
        (["trainer.epochs=["], "no viable alternative"),
        (["-m", "model=lstm,gru"], "not -m"),
    ],
)
def test_bad_input_raises_user_error_and_writes_nothing(in_tmp, capsys, overrides, words):
    with pytest.raises(UserError, match=words):
        organics_bench.run([*SMOKE, *overrides])
    assert not (in_tmp / "outputs").exists()
    assert "error" not in capsys.readouterr().err


def test_the_package_exports_run_and_user_error():
    assert {"run", "UserError"} <= set(organics_bench.__all__)
    assert organics_bench.UserError is UserError and callable(organics_bench.run)
    with pytest.raises(AttributeError):
        organics_bench.no_such_name  # noqa: B018
