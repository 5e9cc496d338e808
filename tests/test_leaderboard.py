"""The stability leaderboard: its sweep (experiment=stability/leaderboard) composes for every model entry and lr, the
table and figure builder (organics-bench-leaderboard) reads published records in their real on-disk layout, and one
tiny multirun goes from the command line to published records to the table."""

import copy
import json
import math
from pathlib import Path

import pytest
from hydra import initialize_config_module

from organics_bench.config_checks import validate
from organics_bench.leaderboard import Cell, cell_config, declared_sweep, expected_cells, main
from organics_bench.models.build import model_choices_by_kind
from organics_bench.training.records import config_hash
from tests.helpers import composed, run_in_process

ENTRIES = {  # leaderboard entry: (model choice, the cpu/table2 row whose model settings it reuses, or None)
    "organics": ("organics", "cpu/table2_organics64_psmnist"),
    "organics_identity": ("organics", "cpu/table2_organics64_identity_psmnist"),
    "organics_fixed_tau": ("organics_fixed_tau", "cpu/table2_organics_fixed_tau64_psmnist"),
    "lstm": ("lstm", "cpu/table2_lstm64_psmnist"),
    "gru": ("gru", "cpu/table2_gru64_psmnist"),
    "rnn": ("rnn", None),
    "ssn": ("ssn", "cpu/table2_ssn64_psmnist"),
    "cornn": ("cornn", "cpu/table2_cornn64_psmnist"),
    "lipschitz_rnn": ("lipschitz_rnn", "cpu/table2_lipschitz_rnn64_psmnist"),
    "antisymmetric_rnn": ("antisymmetric_rnn", "cpu/table2_antisymmetric_rnn64_psmnist"),
}
TINY = ["trainer.epochs=1", "trainer.limit_train_batches=2", "trainer.limit_eval_batches=1", "trainer.batch_size=16"]


def test_the_sweep_covers_every_sequence_model_three_decades_of_lr_and_three_seeds():
    sweep = declared_sweep()
    assert sweep["leaderboard"] == list(ENTRIES)
    assert {model for model, _ in ENTRIES.values()} == set(model_choices_by_kind()["sequence"])
    lrs = [float(lr) for lr in sweep["optimizer.lr"]]
    assert lrs == sorted(lrs) and max(lrs) / min(lrs) >= 1e3
    assert all(math.isclose(math.log10(b / a), 1.0) for a, b in zip(lrs, lrs[1:]))  # log-spaced
    assert sweep["seed"] == ["0", "1", "2"]


@pytest.mark.parametrize("entry", list(ENTRIES))
def test_each_entry_composes_with_the_shared_protocol_and_its_cpu_row_model(entry):
    model_choice, cpu_row = ENTRIES[entry]
    cfg, model = composed(["experiment=stability/leaderboard", f"leaderboard={entry}", "optimizer.lr=0.1", "seed=2"])
    assert model == model_choice and cfg.leaderboard.entry == entry and cfg.leaderboard.label
    assert cfg.experiment_name == "stability_leaderboard" and cfg.seed == 2 and cfg.get("paper") is None
    assert (cfg.task.name, cfg.task.source, cfg.task.image_size) == ("psmnist", "bundled", 14)
    assert (cfg.trainer.epochs, cfg.trainer.batch_size, cfg.trainer.num_threads) == (10, 64, 1)
    assert (cfg.optimizer.lr, cfg.optimizer.weight_decay) == (0.1, 0.0)
    assert cfg.scheduler._target_.endswith("StepLR") and cfg.scheduler.gamma == 1.0  # a constant lr
    assert cfg.logger.name == "none" and cfg.diagnostics.enabled is False
    if cpu_row:
        row, row_model = composed([f"experiment={cpu_row}"])
        assert row_model == model_choice and cfg.model == row.model  # the CPU-scale model settings, reused
    else:
        assert cfg.model.hidden_size == 64
    validate(cfg, model)  # what the command line checks before a run: every key valid, task and model build


def test_every_cell_is_its_own_config_and_the_builder_composes_them_as_the_sweep_does():
    cells = expected_cells()
    sweep = declared_sweep()
    assert [(c.entry, c.lr) for c in cells] == [
        (e, float(lr)) for e in sweep["leaderboard"] for lr in sweep["optimizer.lr"]
    ]
    assert len({c.hash for c in cells}) == len(cells)  # organics and organics_identity differ in model.recurrence
    cfg, _ = composed(["experiment=stability/leaderboard", "leaderboard=gru", "optimizer.lr=0.01", "seed=1"])
    gru = next(c for c in cells if (c.entry, c.lr) == ("gru", 0.01))
    assert gru.hash == config_hash(cfg) and gru.label == "GRU"  # the seed is not part of the hash


# ----- the builder on fabricated records -------------------------------------------------------------------------
def fake_record(
    config: dict, seed: int, status: str, acc, above: float, max_norm, n_params: int, nonfinite: int = 0
) -> dict:
    return {
        "schema_version": 1,
        "task": "psmnist",
        "model": ENTRIES[config["leaderboard"]["entry"]][0],
        "experiment": config["experiment_name"],
        "seed": seed,
        "status": status,
        "epochs_completed": 10,
        "global_step": 550,
        "diverged_at": {"epoch": 3, "step": 120, "loss": "nan"} if status == "diverged" else None,
        "metrics": {"test/acc": acc, "test/loss": "nan" if status == "diverged" else 1.2, "best_val/acc": acc},
        "grad_norm": {
            "max": max_norm,
            "p99": 1.0,
            "median": 0.5,
            "final": "nan" if status == "diverged" else 0.4,
            "nonfinite_steps": nonfinite,
            "fraction_above": {"1": min(1.0, 2 * above), "10": above, "100": 0.0, "1000": 0.0},
        },
        "spectral_radius": {"first_epoch": None, "final": None, "max": None},
        "time": {"wall_s": 20.0, "per_epoch_s": 2.0},
        "n_params": n_params,
        "epochs_planned": 10,
        "command": f"organics-bench leaderboard={config['leaderboard']['entry']} "
        f"optimizer.lr={config['optimizer']['lr']} seed={seed} experiment=stability/leaderboard",
        "git_revision": "abc123",
        "env": {"hardware": "test CPU, 1 threads", "torch": "2.x"},
        "config_hash": config_hash(config),
        "config": copy.deepcopy(config),
    }


def publish(results: Path, record: dict) -> None:
    """Where publish=true puts a record: runs/<experiment>/<model>/<config hash>/seed<k>.json, history beside it."""
    folder = results / "runs" / record["experiment"] / record["model"] / record["config_hash"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"seed{record['seed']}.json").write_text(json.dumps(record))
    (folder / f"seed{record['seed']}.history.csv").write_text("epoch,train_loss,val_acc,grad_norm_max\n1,2.0,0.3,1.0\n")


@pytest.fixture(scope="module")
def configs():
    with initialize_config_module("organics_bench.conf", version_base="1.3"):
        return {
            (entry, lr): cell_config(entry, lr)
            for entry, lr in [("lstm", "0.001"), ("lstm", "0.1"), ("organics", "0.01"), ("organics_identity", "0.01")]
        }


def test_table_and_figure_from_published_records(tmp_path, configs, capsys):
    results = tmp_path / "results"
    lstm_low, lstm_high = configs[("lstm", "0.001")], configs[("lstm", "0.1")]
    for seed, (acc, above, norm) in enumerate([(0.5, 0.0, 2.0), (0.6, 0.1, 5.0), (0.7, 0.2, 3.0)]):
        publish(results, fake_record(lstm_low, seed, "ok", acc, above, norm, 17802))
    publish(results, fake_record(lstm_high, 0, "diverged", 0.3, 0.5, "nan", 17802, nonfinite=3))  # acc not counted
    publish(results, fake_record(lstm_high, 1, "ok", 0.2, 0.1, 7.0, 17802))
    publish(results, fake_record(lstm_high, 2, "ok", 0.4, 0.3, 4.0, 17802))
    publish(results, fake_record(configs[("organics", "0.01")], 0, "ok", 0.45, 0.0, 0.9, 25674))
    publish(results, fake_record(configs[("organics_identity", "0.01")], 0, "ok", 0.35, 0.0, 0.8, 21578))
    interrupted = fake_record(lstm_low, 3, "interrupted", None, 0.0, 1.0, 17802)
    publish(results, interrupted)
    other = copy.deepcopy(lstm_low)
    other["trainer"]["epochs"] = 3  # another config under the same experiment name: never averaged in
    publish(results, fake_record(other, 0, "ok", 0.99, 0.0, 1.0, 17802))

    main(["--results-dir", str(results)])
    out = capsys.readouterr().out
    assert "4 of 40 model x lr cells measured, 9 runs; 1 records of other configs not counted" in out
    table = (results / "tables" / "stability.md").read_text()
    lines = table.splitlines()
    assert "| LSTM | 0.001 | 3 | 0/3 | 10.0% | 5 | 60.00 ± 10.00 |" in lines
    assert "| LSTM | 0.1 | 3 | 1/3 | 30.0% | 7, non-finite in 1 run | 30.00 ± 14.14 (n=2) |" in lines
    assert "| LSTM | 0.01 | not yet run | - | - | - | - |" in lines
    assert "| ORGaNICs (learned tau, W_r spectral norm) | 0.01 | 1 | 0/1 | 0.0% | 0.9 | 45.00 ± 0.00 |" in lines
    assert "| ORGaNICs (W_r = I) | 0.01 | 1 | 0/1 | 0.0% | 0.8 | 35.00 ± 0.00 |" in lines  # its own row
    assert "| LSTM | `lstm` | 17,802 | 6 (2 of 4 lrs) | 1/6 | 0.001 | 0.001: 60.00 ± 10.00 | 20.0% | 7 |" in lines
    assert "| GRU | `gru` | - | not yet run | - | - | - | - | - |" in lines
    assert "1 records of these configs did not finish" in table and "1 records under" in table
    assert "99.00" not in table and "fraction of optimizer steps whose total gradient L2 norm exceeds 10" in table
    assert "organics-bench -m experiment=stability/leaderboard publish=true" in table
    assert "git revisions: abc123" in table
    assert (results / "figures" / "stability.png").stat().st_size > 20_000

    main(
        [
            "--results-dir",
            str(results),
            "--threshold",
            "1",
            "--table",
            str(tmp_path / "t1.md"),
            "--figure",
            str(tmp_path / "f1.png"),
        ]
    )
    assert "| LSTM | 0.001 | 3 | 0/3 | 20.0% | 5 | 60.00 ± 10.00 |" in (tmp_path / "t1.md").read_text()


def test_cell_summary_numbers(configs):
    cell = Cell("lstm", "LSTM", 0.1, config_hash(configs[("lstm", "0.1")]), "stability_leaderboard")
    cell.records = [
        fake_record(configs[("lstm", "0.1")], 0, "diverged", "nan", 1.0, None, 17802, nonfinite=5),
        fake_record(configs[("lstm", "0.1")], 1, "ok", 0.25, 0.2, "inf", 17802),
    ]
    s = cell.summary("10")
    assert (s["runs"], s["diverged"], s["fraction_diverged"], s["nonfinite_runs"]) == (2, 1, 0.5, 1)
    assert s["fraction_above"] == pytest.approx(0.6) and s["max_grad_norm"] is None  # no finite maximum
    assert (s["acc_mean"], s["acc_std"], s["acc_runs"]) == (0.25, 0.0, 1)


def test_a_run_that_trained_on_past_a_gradient_overflow_counts_as_diverged(configs):
    """Records from before the trainer stopped at a non-finite gradient norm say ok: they are still divergences."""
    cell = Cell("lstm", "LSTM", 0.1, config_hash(configs[("lstm", "0.1")]), "stability_leaderboard")
    cell.records = [
        fake_record(configs[("lstm", "0.1")], 0, "ok", 0.40, 0.5, 3.0, 17802, nonfinite=7),
        fake_record(configs[("lstm", "0.1")], 1, "ok", 0.25, 0.2, 2.0, 17802),
    ]
    s = cell.summary("10")
    assert (s["runs"], s["diverged"], s["fraction_diverged"], s["nonfinite_runs"]) == (2, 1, 0.5, 1)
    assert (s["acc_mean"], s["acc_runs"]) == (0.25, 1)


def test_no_records_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--results-dir", str(tmp_path)])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no results records") and len(err.splitlines()) == 1


# ----- end to end: the command line ------------------------------------------------------------------------------
def test_a_tiny_multirun_publishes_records_the_builder_reads(tmp_path, capsys):
    results = tmp_path / "results"
    result = run_in_process(
        "-m",
        "experiment=stability/leaderboard",
        "leaderboard=lstm,cornn",
        "optimizer.lr=0.001,0.1",
        "seed=0",
        *TINY,
        "publish=true",
        f"paths.results_dir={results}",
        f"paths.output_dir={tmp_path / 'outputs'}",
        f"paths.data_dir={tmp_path / 'data'}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    published = sorted((results / "runs" / "stability_leaderboard").glob("*/*/seed0.json"))
    assert len(published) == 4 and {p.parts[-3] for p in published} == {"lstm", "cornn"}
    for path in published:
        record = json.loads(path.read_text())
        assert record["status"] == "ok" and record["config_hash"] == path.parts[-2]
        assert record["config"]["leaderboard"]["entry"] == record["model"]
        assert record["config"]["optimizer"]["lr"] in (0.001, 0.1) and record["global_step"] == 2
        assert "experiment=stability/leaderboard" in record["command"]
        assert set(record["grad_norm"]["fraction_above"]) == {"1", "10", "100", "1000"}

    capsys.readouterr()
    main(["--results-dir", str(results), *(f"--override={o}" for o in TINY)])  # organics-bench-leaderboard
    out = capsys.readouterr().out
    assert "4 of 40 model x lr cells measured, 4 runs; 0 records of other configs not counted" in out
    table = (results / "tables" / "stability.md").read_text()
    for label in ("LSTM", "coRNN"):
        for lr in ("0.001", "0.1"):
            assert f"| {label} | {lr} | 1 | 0/1 |" in table
    assert "| GRU | 0.001 | not yet run |" in table and (results / "figures" / "stability.png").exists()
