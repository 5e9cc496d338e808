"""`organics-bench-tables`: every paper experiment carries its paper number as data, and the table averages only
runs that share the experiment and config hash."""

import copy
import csv
import json

import pytest

from organics_bench.paper_table import main, paper_experiments
from organics_bench.training.records import config_hash

PAPER_VALUES = {  # Table 1 and Table 2 of the paper, test accuracy (%)
    "paper/table1_organics_static": 98.1,
    "paper/table1_organics_static_80": 98.2,
    "paper/table1_organics_static_2layer": 98.1,
    "paper/table1_ssn_static": 94.9,
    "paper/table1_ssn_static_80_20": 95.2,
    "paper/table2_organics128_smnist": 97.8,
    "paper/table2_organics128_psmnist": 90.7,
    "paper/table2_organics64_psmnist": 89.9,
    "paper/table2_organics_fixed_tau64_smnist": 90.3,
    "paper/table2_lstm128_psmnist": 92.6,
}


@pytest.fixture(scope="module")
def experiments():
    return {e.choice: e for e in paper_experiments()}


def test_every_paper_experiment_carries_its_row_as_config_data(experiments):
    assert {
        f"paper/table1_{n}"
        for n in (
            "organics_static",
            "organics_static_80",
            "organics_static_2layer",
            "ssn_static",
            "ssn_static_80_20",
            "autoencoder_linear",
        )
    } <= set(experiments)
    for choice, value in PAPER_VALUES.items():
        assert experiments[choice].paper["value"] == value
    for e in experiments.values():
        assert e.paper["table"] in (1, 2) and e.paper["row"] and e.paper["source"] and e.paper["protocol"]
    full, cpu = experiments["paper/table2_organics64_psmnist"], experiments["cpu/table2_organics64_psmnist"]
    assert full.paper["protocol"] == "full" and cpu.paper["protocol"].startswith("reduced")
    assert cpu.paper["value"] == full.paper["value"] and full.hash != cpu.hash
    assert cpu.config["task"]["image_size"] == 14 and cpu.config["model"]["dt_tau_max_y"] == 4 * 0.02
    t1 = experiments["paper/table1_ssn_static"].config
    assert (t1["trainer"]["epochs"], t1["trainer"]["batch_size"], t1["optimizer"]["lr"]) == (200, 256, 0.001)


def fake_record(experiment, seed: int, status: str = "ok", acc: float | None = 0.98) -> dict:
    return {
        "model": experiment.config["model"]["_target_"],
        "task": experiment.config["task"]["name"],
        "experiment": experiment.name,
        "seed": seed,
        "status": status,
        "epochs_completed": 200,
        "n_params": 669324,
        "metrics": {"test/acc": acc},
        "time": {"per_epoch_s": 4.0 + seed},
        "env": {"hardware": "test CPU, 1 threads", "torch": "2.x"},
        "config": copy.deepcopy(experiment.config),
    }


def test_table_averages_matching_runs_only_and_counts_divergence(tmp_path, experiments):
    experiment = experiments["paper/table1_organics_static"]
    folder = tmp_path / "results" / "runs" / experiment.name / "organics_static"
    folder.mkdir(parents=True)
    other = fake_record(experiment, 3, acc=0.10)
    other["config"]["optimizer"]["lr"] = 0.5  # another config under the same experiment name
    for seed, rec in enumerate(
        [
            fake_record(experiment, 0, acc=0.980),
            fake_record(experiment, 1, acc=0.984),
            fake_record(experiment, 2, "diverged", None),
            other,
        ]
    ):
        (folder / f"seed{seed}.json").write_text(json.dumps(rec))
    assert config_hash(other["config"]) != experiment.hash
    main(["--results-dir", str(tmp_path / "results")])
    rows = {row["experiment"]: row for row in csv.DictReader((tmp_path / "results/tables/paper.csv").open())}
    row = rows["`experiment=paper/table1_organics_static`"]
    assert row["paper"] == "98.1" and row["ours"].startswith("98.20 ± 0.28")
    assert "1 runs of another config not counted" in row["ours"]
    assert row["seeds (diverged)"] == "3 (1)" and row["delta"] == "+0.10" and row["s/epoch"] == "5.0"
    assert rows["`experiment=paper/table2_organics128_psmnist`"]["ours"] == "not yet run"
    markdown = (tmp_path / "results/tables/paper.md").read_text()
    assert "| 1 | ORGaNICs (50:50) | MNIST | 98.1 | 98.20 ± 0.28" in markdown
    assert "Soo & Lengyel" in markdown  # where the SSN numbers come from


def test_a_row_whose_every_seed_diverged_lists_their_best_validation_results(tmp_path, experiments):
    experiment = experiments["paper/table1_ssn_static"]
    folder = tmp_path / "results" / "runs" / experiment.name / "ssn_static"
    folder.mkdir(parents=True)
    overflowed = fake_record(experiment, 1, "ok", 0.9812)  # recorded before the trainer stopped on an overflow
    overflowed["grad_norm"] = {"nonfinite_steps": 36260}
    for seed, rec in enumerate([fake_record(experiment, 0, "diverged", 0.9837), overflowed]):
        (folder / f"seed{seed}.json").write_text(json.dumps(rec))
    main(["--results-dir", str(tmp_path / "results")])
    rows = {row["experiment"]: row for row in csv.DictReader((tmp_path / "results/tables/paper.csv").open())}
    row = rows["`experiment=paper/table1_ssn_static`"]
    assert row["ours"] == "all diverged (best-val weights before it: 98.37, 98.12)"
    assert row["seeds (diverged)"] == "2 (2)" and row["delta"] == "-"


def test_readme_block_is_rewritten_in_place(tmp_path):
    (tmp_path / "results").mkdir()
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- paper-table -->\nstale\n<!-- /paper-table -->\nafter\n")
    main(["--results-dir", str(tmp_path / "results"), "--readme", str(readme)])
    text = readme.read_text()
    assert text.startswith("intro\n<!-- paper-table -->\n| table | paper row |") and text.endswith("-->\nafter\n")
    assert "stale" not in text and "| 1 | ORGaNICs (80:80) | MNIST | 98.2 | not yet run |" in text
    readme.write_text("no markers\n")
    with pytest.raises(SystemExit, match="no <!-- paper-table -->"):
        main(["--results-dir", str(tmp_path / "results"), "--readme", str(readme)])


def test_missing_results_dir_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--results-dir", str(tmp_path / "nowhere")])
    assert stop.value.code == 2 and capsys.readouterr().err.startswith("error: no results dir")
