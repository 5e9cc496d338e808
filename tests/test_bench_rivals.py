"""scripts/bench_throughput.py times the rival stable RNNs (coRNN, Lipschitz RNN, AntisymmetricRNN) in the same rounds
as ORGaNICs and nn.LSTM, at the same shape, and reports their time ratios to both."""

import json

from tests.helpers import run_bench

RIVALS = ("cornn", "lipschitz_rnn", "antisymmetric_rnn")


def test_rivals_are_timed_beside_organics_and_lstm(tmp_path):
    result = run_bench(
        tmp_path,
        *("--shapes", "12:3:6", "--repeats", "2", "--naive-repeats", "1", "--static-shape", "3:5,2"),
        *("--static-repeats", "1", "--ssn-static-shape", "3:5,2:4", "--ssn-static-repeats", "1"),
        *("--scaling-threads", "none"),
    )
    assert result.returncode == 0, result.stderr
    (json_path,) = tmp_path.glob("*.json")
    (case,) = json.loads(json_path.read_text())["cases"]
    assert set(case["results"]) == {"naive", "stepped", "engine", "lstm", "ssn-naive", "ssn", "matmuls"}  # unchanged
    assert set(case["rivals"]) == set(RIVALS)
    lstm, engine = case["results"]["lstm"]["median_s"], case["results"]["engine"]["median_s"]
    for name in RIVALS:
        timing = case["rivals"][name]
        assert timing["runs"] == 2 and 0 < timing["min_s"] <= timing["median_s"] <= timing["max_s"], name
        assert case["rivals_over_lstm"][name] == timing["median_s"] / lstm
        assert case["rivals_over_engine"][name] == timing["median_s"] / engine
        assert timing["peak_mb"] >= 0, name  # measured in a fresh process, like the methods above
    table = (tmp_path / f"{json_path.stem}.md").read_text()
    (row,) = [line for line in table.splitlines() if line.startswith("| 12 x 3 x 6 |") and line.count("|") == 10]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[6] == " / ".join(f"{case['rivals_over_lstm'][n]:.2f}" for n in RIVALS)
    assert cells[7] == " / ".join(f"{case['rivals_over_engine'][n]:.2f}" for n in RIVALS)
    assert "| coRNN (s) | Lipschitz RNN (s) | AntisymmetricRNN (s) |" in table
