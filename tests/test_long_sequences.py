"""organics-bench-long-sequences: the parity and adding-problem tables and figures and the gradient-flow figure, from
small record files written in the published format (results/runs/<experiment>/<model>/<hash>/seed<k>.*)."""

import csv
import json
from pathlib import Path

import pytest

from organics_bench.long_sequences import main


def write_run(
    results: Path,
    experiment: str,
    model: str,
    config_hash: str,
    seed: int,
    *,
    status: str = "ok",
    config: dict,
    metrics: dict,
    grad_max: float,
    extra_tests: dict | None = None,
    history: list[tuple[int, float]] = (),
    flows: list[tuple[int, list[float]]] = (),
    data: dict | None = None,
) -> None:
    """seed<k>.json (the record's keys as `RunRecord.as_dict` writes them), seed<k>.history.csv and, with `flows`,
    seed<k>.diagnostics.json, as `records.publish` lays them out."""
    folder = results / "runs" / experiment / model / config_hash
    folder.mkdir(parents=True, exist_ok=True)
    record = {
        "schema_version": 1,
        "task": config["task"]["name"],
        "model": model,
        "experiment": experiment,
        "seed": seed,
        "status": status,
        "epochs_completed": len(history),
        "global_step": history[-1][0] if history else 0,
        "diverged_at": {"epoch": 2, "step": 150, "loss": "nan"} if status == "diverged" else None,
        "metrics": metrics,
        **({"extra_tests": extra_tests} if extra_tests else {}),
        "grad_norm": {"max": grad_max, "nonfinite_steps": 0, "fraction_above": {"10": 0.0}},
        "n_params": 1000,
        "epochs_planned": 3,
        "data": data or {},
        "config_hash": config_hash,
        "config": config,
        "command": f"organics-bench experiment={experiment} model={model} seed={seed}",
        "git_revision": "0123abc",
        "env": {"hardware": "x86_64 CPU, 1 threads", "torch": "2.14.1"},
    }
    (folder / f"seed{seed}.json").write_text(json.dumps(record))
    with (folder / f"seed{seed}.history.csv").open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["epoch", "step", "train_loss", "train_acc", "val_loss", "val_acc"])
        for epoch, (step, val_loss) in enumerate(history, 1):
            writer.writerow([epoch, step, val_loss, 0.5, val_loss, 0.5])
    if flows:
        diagnostics = {
            "spectra": [],
            "gradient_flow": [{"step": s, "epoch": 0, "grad_norm_by_time": norms} for s, norms in flows],
        }
        (folder / f"seed{seed}.diagnostics.json").write_text(json.dumps(diagnostics))


PARITY_DATA = {
    "train_lengths": [1, 40],
    "curriculum_epochs": 25,
    "sizes": {"train": 20000, "val": 2000, "test_per_length": 2000},
}


def parity_config(model: str, **model_keys) -> dict:
    return {"task": {"name": "parity"}, "optimizer": {"lr": 0.001}, "model": model_keys}


def adding_config(entry: str, label: str, length: int, lr: float) -> dict:
    return {
        "task": {"name": "adding", "length": length},
        "optimizer": {"lr": lr},
        "model": {},
        "adding": {"entry": entry, "label": label},
    }


@pytest.fixture
def results(tmp_path) -> Path:
    root = tmp_path / "results"
    for seed, accs, solved in ((0, [1.0, 0.995, 0.7, 0.5], 64), (1, [0.98, 0.9, 0.6, 0.5], None)):
        write_run(
            root,
            "parity",
            "lstm",
            "aaaa",
            seed,
            config=parity_config("lstm"),
            metrics={"test/acc": accs[0], "test/loss": 0.1},
            grad_max=12.5 + seed,
            extra_tests={"acc_by_length": dict(zip(["40", "64", "128", "256"], accs)), "longest_solved_99": solved},
            data=PARITY_DATA,
        )
    write_run(
        root,
        "parity",
        "lstm",
        "aaaa",
        2,
        status="diverged",
        config=parity_config("lstm"),
        metrics={"test/acc": 0.5},
        grad_max=3e9,
    )
    write_run(
        root,
        "parity",
        "organics",
        "bbbb",
        0,
        config=parity_config("organics", recurrence="identity"),
        metrics={"test/acc": 1.0},
        grad_max=2.0,
        extra_tests={"acc_by_length": {"40": 1.0, "64": 1.0, "128": 1.0, "256": 0.99}, "longest_solved_99": 256},
    )
    baseline = {"baseline": {"predictor": "always 1", "mse": 1 / 6, "test_mse": 0.1702}}
    curves = {  # (entry, lr, seed): validation MSE after each 100 iterations
        ("organics", 0.01, 0): [0.17, 0.05, 0.009, 0.004],
        ("organics", 0.01, 1): [0.17, 0.1, 0.02, 0.011],
        ("organics", 0.001, 0): [0.17, 0.16, 0.15, 0.14],
        ("lstm", 0.01, 0): [0.168, 0.167, 0.167, 0.166],
    }
    for (entry, lr, seed), mses in curves.items():
        label = {"organics": "ORGaNICs", "lstm": "LSTM"}[entry]
        write_run(
            root,
            "adding200",
            entry,
            f"{entry}{lr}",
            seed,
            config=adding_config(entry, label, 200, lr),
            metrics={"test/loss": mses[-1] * 1.1, "test/acc": 0.3},
            grad_max=4.0,
            history=[(100 * (i + 1), mse) for i, mse in enumerate(mses)],
            flows=[(0, [1e-6, 1e-3, 1.0]), (400, [1e-2, 1e-1, 1.0])],
            data=baseline,
        )
    return root


def test_the_parity_table_gives_accuracy_by_length_solved_lengths_and_divergence(results, capsys):
    main(["--results-dir", str(results)])
    table = (results / "tables" / "long_sequences_parity.md").read_text()
    assert (
        "Trained on bit strings of 1-40 bits (a curriculum: the longest string grows to 40 bits over the first 25 "
        "epochs), tested on strings of exactly each length (2,000 per length)"
    ) in table
    rows = {line.split(" | ")[0].lstrip("| "): line for line in table.splitlines() if line.startswith("| ")}
    # LSTM: seeds 0 and 1 averaged (99.0 ± 1.4 at 40 bits), the diverged seed 2 counted, never averaged.
    assert rows["LSTM"] == (
        "| LSTM | 0.001 | 0, 1, 2 | 99.0 ± 1.4 | 94.8 ± 6.7 | 65.0 ± 7.1 | 50.0 ± 0.0 | 64, none | 3e+09 | 1 of 3 |"
    )
    # One seed: its value alone, no spread.
    assert rows["ORGaNICs (W_r = I)"].endswith("| 100.0 | 99.0 | 256 | 2 | 0 of 1 |")
    # Every run's command, git revision and hardware close the table.
    assert (
        "- lstm seed 2: `organics-bench experiment=parity model=lstm seed=2` (git 0123abc, x86_64 CPU, 1 threads, "
        "torch 2.14.1)"
    ) in table.split("Made by:\n")[1]
    assert (results / "figures" / "long_sequences_parity.png").stat().st_size > 10_000
    assert "wrote" in capsys.readouterr().out


def test_the_adding_table_gives_test_mse_iterations_to_solve_and_the_baseline(results):
    main(["--results-dir", str(results)])
    table = (results / "tables" / "long_sequences_adding.md").read_text()
    assert "always-1 predictor scores 0.167 (on the test sets: T = 200: 0.1702)" in table
    rows = [line for line in table.splitlines() if line.startswith("| 200 |")]
    assert rows == [
        "| 200 | LSTM | 0.01 | 0 | 0.183 | not reached | 4 | 0 of 1 | 1,000 |",
        "| 200 | ORGaNICs | 0.001 | 0 | 0.154 | not reached | 4 | 0 of 1 | 1,000 |",
        # seed 0 first reaches <= 0.01 at iteration 300; seed 1 ends at 0.011.
        "| 200 | ORGaNICs | 0.01 | 0, 1 | 0.00825 ± 0.00544 | 300, not reached | 4 | 0 of 2 | 1,000 |",
    ]
    made_by = table.split("Made by:\n")[1].splitlines()
    command = "- organics seed 1: `organics-bench experiment=adding200 model=organics seed=1`"
    assert len(made_by) == 4 and any(line.startswith(command) for line in made_by)
    for name in ("long_sequences_adding.png", "long_sequences_gradient_flow.png"):
        assert (results / "figures" / name).stat().st_size > 10_000


def test_a_solved_runs_test_mse_keeps_its_significant_digits(results):
    write_run(
        results,
        "adding1000",
        "gru",
        "gru1000",
        0,
        config=adding_config("gru", "GRU", 1000, 0.01),
        metrics={"test/loss": 3.559e-05, "test/acc": 1.0},
        grad_max=2.5,
        history=[(100, 0.15), (200, 0.002), (300, 4e-05)],
    )
    main(["--results-dir", str(results)])
    table = (results / "tables" / "long_sequences_adding.md").read_text()
    assert "| 1000 | GRU | 0.01 | 0 | 3.56e-05 | 200 | 2.5 | 0 of 1 | 1,000 |" in table.splitlines()


def test_the_adding_legend_names_the_models_of_every_panel(results, monkeypatch):
    """A model run at T = 200 only (ORGaNICs here) keeps its legend entry beside a T = 1000 panel without it."""
    write_run(
        results,
        "adding1000",
        "lstm",
        "lstm1000",
        0,
        config=adding_config("lstm", "LSTM", 1000, 0.01),
        metrics={"test/loss": 0.17, "test/acc": 0.1},
        grad_max=3.0,
        history=[(100, 0.168), (200, 0.167)],
    )
    legends = {}

    def record_legend(fig, path):
        legends[Path(path).name] = [
            text.get_text() for ax in fig.axes if (legend := ax.get_legend()) for text in legend.get_texts()
        ]
        return path

    monkeypatch.setattr("organics_bench.plots.save_figure", record_legend)
    main(["--results-dir", str(results)])
    assert legends["long_sequences_adding.png"] == [
        "LSTM (lr 0.01)",
        "ORGaNICs (lr 0.01)",
        "always 1 (0.167)",
        "MSE 0.01",
    ]


def test_runs_without_diagnostics_skip_the_gradient_flow_figure(results, capsys):
    for path in (results / "runs").rglob("*.diagnostics.json"):
        path.unlink()
    main(["--results-dir", str(results)])
    assert not (results / "figures" / "long_sequences_gradient_flow.png").exists()
    assert "gradient flow: no published diagnostics" in capsys.readouterr().out


def test_no_records_is_one_error_line_and_nothing_written(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--results-dir", str(tmp_path / "results")])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: no results records under")
    assert not (tmp_path / "results").exists()
