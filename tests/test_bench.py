"""scripts/bench_throughput.py end to end on a tiny shape: every method timed, ratios, memory, the written record."""

import json

from tests.helpers import run_bench


def test_benchmark_writes_its_record_and_table(tmp_path):
    result = run_bench(
        tmp_path,
        "--shapes",
        "12:3:6",
        "--repeats",
        "2",
        "--naive-repeats",
        "1",
        "--static-shape",
        "5:6,4",
        "--static-repeats",
        "2",
        "--scaling-shape",
        "12:3:6",
        "--scaling-repeats",
        "1",
        "--ssn-static-shape",
        "3:5,2:4",
        "--ssn-static-repeats",
        "1",
    )
    assert result.returncode == 0, result.stderr
    assert "device: cpu" in result.stdout
    (json_path,), (md_path,) = tmp_path.glob("*.json"), tmp_path.glob("*.md")
    record = json.loads(json_path.read_text())
    assert record["engine_backend"] == "native" and record["flush_denormal"] is True
    assert record["device"] == "cpu" and record["threads"] == 1 and record["git_revision"]
    (case,) = record["cases"]
    assert (case["steps"], case["batch"], case["units"]) == (12, 3, 6)
    results = case["results"]
    assert set(results) == {"naive", "stepped", "engine", "lstm", "ssn-naive", "ssn", "matmuls"}
    for method, timing in results.items():
        assert timing["runs"] == (1 if method in ("naive", "ssn-naive") else 2), method
        assert 0 < timing["min_s"] <= timing["median_s"] <= timing["max_s"], method
        assert ("peak_mb" in timing) == (method != "matmuls"), method  # measured for every method, not the floor
        assert timing.get("peak_mb", 0) >= 0, method
    assert case["speedup_vs_naive"] == results["naive"]["median_s"] / results["engine"]["median_s"]
    assert case["engine_over_lstm"] == results["engine"]["median_s"] / results["lstm"]["median_s"]
    assert case["speedup_bound_by_matmuls"] == results["naive"]["median_s"] / results["matmuls"]["median_s"]
    assert case["engine_over_matmuls"] == results["engine"]["median_s"] / results["matmuls"]["median_s"]
    assert case["engine_speedup_vs_stepped"] == results["stepped"]["median_s"] / results["engine"]["median_s"]
    threads = record["threads_section"]
    assert (threads["steps"], threads["batch"], threads["units"], threads["threads"]) == (12, 3, 6, [1, 2])
    assert set(threads["results"]) == {f"{m}@{t}" for m in ("engine", "lstm", "matmuls") for t in (1, 2)}
    timing = {name: t["median_s"] for name, t in threads["results"].items()}
    assert threads["speedup"]["engine"]["2"] == timing["engine@1"] / timing["engine@2"]
    assert threads["speedup"]["lstm"]["1"] == 1.0
    assert threads["engine_over_matmuls"]["2"] == timing["engine@2"] / timing["matmuls@2"]
    static = record["static"]
    assert (static["batch"], static["layers"], static["lu_backend"]) == (5, [6, 4], "cpu-kernels")
    assert [case["official_diag_a"] for case in static["cases"]] == [False, True]
    for case in static["cases"]:
        assert set(case["results"]) == {"autograd", "adjoint"}
        assert all(timing["runs"] == 2 for timing in case["results"].values())
        assert case["speedup"] == case["results"]["autograd"]["median_s"] / case["results"]["adjoint"]["median_s"]
    table = md_path.read_text()
    assert "| 12 x 3 x 6 |" in table and "native" in table and "| 2 | " in table
    assert "| diag(sqrt(a)) |" in table and "| official_diag_a: diag(a) |" in table


def test_benchmark_static_section_alone(tmp_path):
    result = run_bench(tmp_path, "--static-only", "--static-shape", "3:5,2", "--static-repeats", "1")
    assert result.returncode == 0, result.stderr
    (json_path,) = tmp_path.glob("*.json")
    record = json.loads(json_path.read_text())
    assert record["cases"] == [] and len(record["static"]["cases"]) == 2
    assert "T x batch x units" not in (tmp_path / f"{json_path.stem}.md").read_text()


def test_benchmark_ssn_static_section_alone(tmp_path):
    result = run_bench(tmp_path, "--ssn-static-only", "--ssn-static-shape", "3:5,2:4", "--ssn-static-repeats", "2")
    assert result.returncode == 0, result.stderr
    (json_path,) = tmp_path.glob("*.json")
    record = json.loads(json_path.read_text())
    assert record["cases"] == [] and record["static"] is None
    ssn = record["ssn_static"]
    assert (ssn["batch"], ssn["sizes"], ssn["steps"], ssn["fused_backend"]) == (3, [5, 2], 4, "cpu-kernels")
    assert set(ssn["results"]) == {"torch", "fused"} and all(r["runs"] == 2 for r in ssn["results"].values())
    assert ssn["speedup"] == ssn["results"]["torch"]["median_s"] / ssn["results"]["fused"]["median_s"]
    table = (tmp_path / f"{json_path.stem}.md").read_text()
    assert "| 5 + 2 x 4 |" in table and "T x batch x units" not in table and "diag(sqrt(a))" not in table
