"""The adding problem: its generator, its objective (MSE), bad input, and a smoke run of every sequence model on it
through the experiment's own entries, published and turned into the long-sequence tables."""

import csv
import json
import math
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from organics_bench.diagnostics.dynamics import gradient_flow
from organics_bench.long_sequences import main as long_sequences
from organics_bench.models.rnn import TanhRNN
from organics_bench.tasks.adding import BASELINE_MSE, AddingProblem, adding_sequences
from organics_bench.tasks.objectives import MSE, objective
from tests.helpers import ROOT, one_line_error, run_in_process

ENTRIES = (
    "organics",
    "organics_identity",
    "organics_fixed_tau",
    "lstm",
    "gru",
    "rnn",
    "ssn",
    "cornn",
    "lipschitz_rnn",
    "antisymmetric_rnn",
)
SMALL_SETS = ("task.n_train=64", "task.n_val=32", "task.n_test=32")  # the models keep their 128 units


@pytest.mark.parametrize("length", [2, 7, 200])
def test_each_sequence_has_two_markers_one_in_each_half_and_its_target_is_their_sum(length):
    split = adding_sequences(500, length, torch.Generator().manual_seed(3))
    values, marker = split.x[..., 0], split.x[..., 1]
    assert split.x.shape == (500, length, 2) and split.y.shape == (500,)
    assert ((values >= 0) & (values < 1)).all()
    assert set(marker.unique().tolist()) <= {0.0, 1.0} and (marker.sum(1) == 2).all()
    half = length // 2
    assert (marker[:, :half].sum(1) == 1).all() and (marker[:, half:].sum(1) == 1).all()
    first, second = marker[:, :half].argmax(1), half + marker[:, half:].argmax(1)
    rows = torch.arange(500)
    assert torch.allclose(split.y, values[rows, first] + values[rows, second])
    if length > 7:  # both halves' positions are used, not one fixed step
        assert len(first.unique()) > half // 2 and len(second.unique()) > half // 2


def test_the_always_one_predictor_scores_one_sixth():
    # (u1 + u2 - 1)^2 has variance 7/180, so the mean of 20,000 lies within 4 standard errors (0.0056) of 1/6.
    split = adding_sequences(20_000, 10, torch.Generator().manual_seed(11))
    mse = MSE.loss(torch.ones(20_000, 1), split.y).item()
    assert abs(mse - BASELINE_MSE) < 4 * math.sqrt(7 / 180 / 20_000)
    assert abs(mse - 0.167) < 0.006


def test_the_task_is_seeded_records_its_baseline_and_declares_mse():
    task = AddingProblem("adding", length=20, n_train=30, n_val=10, n_test=1000, seed=5, test_seed=6)
    data, again = task.load(), task.load()
    assert torch.equal(data.train.x, again.train.x) and torch.equal(data.test.y, again.test.y)
    other_seed = AddingProblem("adding", length=20, n_train=30, n_val=10, n_test=1000, seed=8, test_seed=6).load()
    assert torch.equal(other_seed.test.x, data.test.x) and not torch.equal(other_seed.train.x, data.train.x)
    assert (len(data.train), len(data.val), len(data.test)) == (30, 10, 1000)
    baseline = data.record["baseline"]
    assert baseline["mse"] == pytest.approx(1 / 6)
    assert baseline["test_mse"] == pytest.approx((data.test.y - 1).square().mean().item())
    assert abs(baseline["test_mse"] - 1 / 6) < 0.03
    spec = task.spec
    assert (spec.kind, spec.d_input, spec.n_classes, spec.seq_len, spec.objective) == ("sequence", 2, 1, 20, "mse")


def test_the_mse_objective_scores_outputs_and_counts_hits_within_the_tolerance():
    targets = torch.tensor([1.0, 0.5, 1.5])
    outputs = torch.tensor([[1.0], [0.53], [1.6]])
    assert MSE.loss(outputs, targets).item() == pytest.approx((0.03**2 + 0.1**2) / 3)
    assert MSE.loss(outputs, targets, reduction="sum").item() == pytest.approx(0.03**2 + 0.1**2)
    assert MSE.hits(outputs, targets).tolist() == [True, True, False]
    assert objective("cross_entropy").hits(torch.tensor([[0.1, 2.0]]), torch.tensor([1])).tolist() == [True]


def test_gradient_flow_through_time_differentiates_the_task_loss():
    model = TanhRNN(d_input=2, n_classes=1, hidden_size=8)
    split = adding_sequences(4, 30, torch.Generator().manual_seed(0))
    norms = gradient_flow(model, split.x, split.y, MSE.loss)
    assert len(norms) == 30 and all(math.isfinite(n) for n in norms) and norms[-1] > 0


@pytest.mark.parametrize(
    "override,expected",
    [
        ("task.length=0", "task.length must be an integer >= 1, got 0"),
        ("task.length=-5", "task.length must be an integer >= 1, got -5"),
        ("task.length=2.5", "task.length must be an integer >= 1, got 2.5"),
        ("task.length=1", "task.length must be at least 2 (one marker in each half), got 1"),
        ("task.markers=3", "task.markers must be 2"),
        ("task.n_test=1000000000000", "more than 50% of the"),
    ],
)
def test_bad_input_is_one_error_line_and_nothing_written(tmp_path, override, expected):
    result = run_in_process("model=rnn", "task=adding", "logger=none", override, cwd=tmp_path)
    assert expected in one_line_error(result)
    assert list(tmp_path.iterdir()) == []


def adding_smoke_sweep(tmp_path: Path, *overrides: str) -> Path:
    """A smoke multirun of `experiment=extension/adding200` on small data sets into tmp_path/sweep, published to
    tmp_path/results (returned)."""
    results = tmp_path / "results"
    sweep = run_in_process(
        "-m",
        "debug=smoke",
        "experiment=extension/adding200",
        *overrides,
        *SMALL_SETS,
        f"paths.results_dir={results}",
        "publish=true",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        cwd=tmp_path,
    )
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    return results


def test_every_sequence_model_runs_the_adding_experiment_and_its_records_make_the_tables(tmp_path):
    results = adding_smoke_sweep(tmp_path, f"adding={','.join(ENTRIES)}", "optimizer.lr=0.01", "seed=0")
    records = [json.loads(p.read_text()) for p in sorted((results / "runs" / "adding200").glob("*/*/seed0.json"))]
    assert sorted(r["config"]["adding"]["entry"] for r in records) == sorted(ENTRIES)
    for record in records:
        assert record["status"] == "ok" and record["global_step"] == 2, record["model"]
        assert record["data"]["spec"]["objective"] == "mse" and record["data"]["baseline"]["mse"] == 1 / 6
        assert math.isfinite(record["metrics"]["test/loss"]) and record["config"]["task"]["length"] == 200
    units = {r["config"]["adding"]["entry"]: r["config"]["model"] for r in records}
    assert units["cornn"]["hidden_size"] == 128 and units["ssn"]["n_excitatory"] == 128
    assert units["organics_identity"]["recurrence"] == "identity"
    long_sequences(["--results-dir", str(results)])
    table = (results / "tables" / "long_sequences_adding.md").read_text()
    assert sum(line.startswith("| 200 |") for line in table.splitlines()) == len(ENTRIES)
    assert "| 200 | ORGaNICs (W_r = I) | 0.01 | 0 |" in table
    assert (results / "figures" / "long_sequences_gradient_flow.png").stat().st_size > 10_000


def test_the_cornn_sweep_runs_at_its_own_lr_on_the_grid_seed(tmp_path):
    adding_smoke_sweep(tmp_path, "adding=cornn", "optimizer.lr=0.02")
    jobs = sorted((tmp_path / "sweep").glob("*/metrics.json"))
    configs = [json.loads(path.read_text())["config"] for path in jobs]
    assert [(c["seed"], c["optimizer"]["lr"], c["model"]["gamma"]) for c in configs] == [(0, 0.02, 66.0)]


def _set_final_val_mse(history: Path, value: float) -> None:
    rows = list(csv.DictReader(history.open()))
    rows[-1]["val_loss"] = str(value)
    with history.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_each_entry_runs_on_at_the_rate_with_the_lower_final_mse_of_the_grid_seed(tmp_path, capsys):
    """make adding's stage 2: `--chosen-lr` picks each entry's rate on seed 0 of the grid alone, so seeds run at it
    later never change the choice; one override line per rate."""
    results = adding_smoke_sweep(tmp_path, "adding=rnn,gru", "optimizer.lr=0.001,0.01", "diagnostics=none")
    final_mse = {("rnn", 0.001): 0.05, ("rnn", 0.01): 0.02, ("gru", 0.001): 0.03, ("gru", 0.01): 0.09}
    for path in (results / "runs" / "adding200").glob("*/*/seed0.json"):
        config = json.loads(path.read_text())["config"]
        key = (config["adding"]["entry"], config["optimizer"]["lr"])
        _set_final_val_mse(path.with_name("seed0.history.csv"), final_mse[key])
        if key == ("rnn", 0.01):  # a later seed at the chosen rate, far worse: the choice stands
            shutil.copy(path.with_name("seed0.history.csv"), path.with_name("seed1.history.csv"))
            path.with_name("seed1.json").write_text(json.dumps(json.loads(path.read_text()) | {"seed": 1}))
            _set_final_val_mse(path.with_name("seed1.history.csv"), 0.9)
    long_sequences(["--results-dir", str(results), "--chosen-lr", "adding200"])
    assert capsys.readouterr().out.splitlines() == ["adding=gru optimizer.lr=0.001", "adding=rnn optimizer.lr=0.01"]
    assert not (results / "tables").exists()  # it only prints

    with pytest.raises(SystemExit) as exit_info:
        long_sequences(["--results-dir", str(tmp_path / "empty"), "--chosen-lr", "adding200"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no records under") and len(err.splitlines()) == 1


def test_make_adding_runs_the_grid_then_each_chosen_rate_on_seeds_1_2_and_at_t_1000(tmp_path):
    """The target's control flow, with stand-ins for the two commands that log their arguments."""
    fake_bin, calls = tmp_path / "bin", tmp_path / "calls.txt"
    fake_bin.mkdir()
    (fake_bin / "organics-bench").write_text(f'#!/bin/sh\necho "$*" >> {calls}\n')
    chosen = "adding=gru optimizer.lr=0.001\nadding=lstm,rnn optimizer.lr=0.01"
    (fake_bin / "organics-bench-long-sequences").write_text(
        f'#!/bin/sh\necho "report $*" >> {calls}\n[ "$1" = --chosen-lr ] && printf "{chosen}\\n"\nexit 0\n'
    )
    for script in fake_bin.iterdir():
        script.chmod(0o755)
    sweeps = tmp_path / "sweeps"
    result = subprocess.run(
        ["make", "-o", "install", "adding", f"BIN={fake_bin}", f"SWEEPS={sweeps}", "ARGS=x=1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    lines = calls.read_text().splitlines()
    assert lines == [
        f"-m experiment=extension/adding200 publish=true skip_published=true "
        f"hydra.sweep.dir={sweeps}/adding200_grid x=1",
        f"-m experiment=extension/adding200 adding=cornn optimizer.lr=0.02 publish=true skip_published=true "
        f"hydra.sweep.dir={sweeps}/adding200_cornn x=1",
        "report --chosen-lr adding200",
        f"-m experiment=extension/adding200 adding=gru optimizer.lr=0.001 seed=1,2 publish=true skip_published=true "
        f"hydra.sweep.dir={sweeps}/adding200_seeds_lr0.001 x=1",
        f"-m experiment=extension/adding1000 adding=gru optimizer.lr=0.001 publish=true skip_published=true "
        f"hydra.sweep.dir={sweeps}/adding1000_lr0.001 x=1",
        f"-m experiment=extension/adding200 adding=lstm,rnn optimizer.lr=0.01 seed=1,2 publish=true "
        f"skip_published=true hydra.sweep.dir={sweeps}/adding200_seeds_lr0.01 x=1",
        f"-m experiment=extension/adding1000 adding=lstm,rnn optimizer.lr=0.01 publish=true skip_published=true "
        f"hydra.sweep.dir={sweeps}/adding1000_lr0.01 x=1",
        "report ",
    ]
