"""Training throughput of ORGaNICs: the plain per-step form vs the sequence engine vs nn.LSTM at equal units.

Each case times forward + backward of one batch (run the sequence, read out, sum, backward; no optimizer step) for
  naive:  `DynamicalModel.run_steps(model, x)`, i.e. `model.step` called once per time step, autograd through it;
  stepped: `Organics.run_steps` with engine="stepped": the sequence engine's steps driven from Python, each step's
          matmuls through torch and its element-wise work through the fused C kernels (organics_kernels.c);
  engine: `Organics.run_steps` with engine="fused" (organics_bench/models/organics_engine.py): on CPU the native
          time loop (organics_native.cpp), one call per sequence each way;
  lstm:   `organics_bench.models.rnn.LSTM` (torch's nn.LSTM) with the same number of units;
  ssn-naive: `DynamicalModel.run_steps` on `organics_bench.models.ssn.SSN` with units E and units I neurons
          (the SSN counterpart of ORGaNICs with units y and units a neurons), autograd through `step`;
  ssn:    `SSN.run_steps`, the SSN's sequence engine (organics_bench/models/ssn_engine.py; on CPU its fused C
          kernels, ssn_kernels.c);
  cornn, lipschitz_rnn, antisymmetric_rnn: the rival stable RNNs of paper Table 2 (organics_bench/models/
          stable_rnns.py) with the same number of units, at their model configs' defaults (coRNN explicit damping,
          Lipschitz RNN explicit Euler, plain AntisymmetricRNN), each through its own `run_steps` (structured
          matrices and input drives formed once, autograd through a Python loop over time steps). They are timed
          in the same interleaved rounds as the methods above and reported in a table of their own, as time ratios
          to nn.LSTM and to the ORGaNICs engine of the same run.
The ORGaNICs engine runs its native time loop on CPU (`native`; `cpu-kernels` where it cannot be built) and torch
steps compiled with torch.compile on CUDA (the untimed warm-up run compiles them); the record says which. On
CPU, subnormal floats are flushed to zero as in training (trainer.flush_denormal, the default): without it nn.LSTM
runs 8-9x slower here.
A second section times one training step (forward + backward of cross-entropy + reconstruction, no optimizer step)
of the two-layer static ORGaNICs model (784 -> 40 autoencoder code, layers of 120 and 60 units with learned W_r,
Algorithm 1 with K = 10, W_r moved off its identity init) at batch 256, for both fixed-point variants (diag(sqrt(a))
and official_diag_a's diag(a)) and
  autograd: fixed_point_solver=autograd, autograd through the 10 unrolled torch.linalg.solve calls;
  adjoint:  fixed_point_solver=adjoint, the hand-written backward and batched LU (organics_bench/models/
            fixed_point_solver.py), same iterates and gradient.
A third section times one training step (forward + backward of cross-entropy + reconstruction) of the static SSN
of paper Table 1 (784 -> 40 autoencoder code, 50 E + 50 I neurons, 200 Euler steps from rest) at batch 256, with
  torch:  engine="torch", the SSN engine as torch operations (the form before its fused kernels);
  fused:  engine="auto", on CPU the fused C kernels (organics_bench/models/ssn_kernels.c, ssn_fused.py).
Methods are timed in interleaved rounds in one process, after one untimed warm-up run each (it pays one-time
costs: first touch of fresh memory, library setup); medians and min-max spread are reported. Peak BPTT memory
is measured per case in a fresh subprocess: on CPU (Linux) the growth of the resident set over one forward +
backward (peak RSS, VmHWM after resetting it, minus the RSS before the run), which counts every torch allocation
(saved activations, the engine's buffers, gradients) and one-time library buffers; on CUDA,
torch.cuda.max_memory_allocated minus the bytes allocated before the run.

A threads section times the engine, nn.LSTM and the matmuls alone at the paper's 784 x 256 x 64 with 1 and 2 torch
threads, interleaved round by round, for the speed-up that a second core gives each (the engine splits the batch
across threads; nn.LSTM and the matmuls alone rely on the BLAS's threads).

    python scripts/bench_throughput.py --quick          # small shape only, a few minutes on a 2-core CPU
    python scripts/bench_throughput.py                  # small shape + paper shape with 128 units
    python scripts/bench_throughput.py --shapes small,paper64,paper128 --repeats 5 --threads 1
    python scripts/bench_throughput.py --static-only    # the static model's training step only
    python scripts/bench_throughput.py --ssn-static-only    # the static SSN's training step only
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from organics_bench.models import fixed_point_solver
from organics_bench.models.base import DynamicalModel
from organics_bench.models.organics import Organics
from organics_bench.models.organics_engine import backend
from organics_bench.models.organics_static import OrganicsStatic
from organics_bench.models.rnn import LSTM
from organics_bench.models.ssn import SSN, SSNStatic
from organics_bench.models.ssn_engine import backend as ssn_backend
from organics_bench.models.stable_rnns import AntisymmetricRNN, CoRNN, LipschitzRNN
from organics_bench.training.records import environment, git_revision

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("naive", "stepped", "engine", "lstm", "ssn-naive", "ssn")
NAIVE = {"naive", "ssn-naive"}  # run through the per-step `step` loop
RIVALS = {"cornn": "coRNN", "lipschitz_rnn": "Lipschitz RNN", "antisymmetric_rnn": "AntisymmetricRNN"}  # name: label


def ssn_with_units(d_input: int, n_classes: int, units: int) -> SSN:
    return SSN(d_input, n_classes, units, units)


def stepped_organics(d_input: int, n_classes: int, units: int) -> Organics:
    return Organics(d_input, n_classes, units, engine="stepped")


MODELS = {
    "naive": Organics,
    "stepped": stepped_organics,
    "engine": Organics,
    "lstm": LSTM,
    "ssn-naive": ssn_with_units,
    "ssn": ssn_with_units,
    "cornn": CoRNN,
    "lipschitz_rnn": LipschitzRNN,
    "antisymmetric_rnn": AntisymmetricRNN,
}
# name: (time steps, batch, units, repeats of engine and LSTM, repeats of the naive form)
SHAPES = {
    "small": (196, 64, 128, 5, 3),
    "paper64": (784, 256, 64, 3, 2),
    "paper128": (784, 256, 128, 3, 2),
}
STATIC_SOLVERS = ("autograd", "adjoint")  # fixed_point_solver: the plain form, then the hand-written backward
STATIC_SHAPE = "256:120,60"  # batch:units per layer (paper Table 1's two-layer row)
SSN_ENGINES = {"torch": "torch", "fused": "auto"}  # name in the record: the model's engine
SSN_STATIC_SHAPE = "256:50,50:200"  # batch:E,I:steps (paper Table 1's SSN (50:50) row)
SCALING_METHODS = ("engine", "lstm", "matmuls")  # timed at each thread count of the threads section


def make_case(method: str, steps: int, batch: int, units: int, device: str):
    """A zero-argument function running one forward + backward of `method` on a fixed random batch."""
    torch.manual_seed(0)
    model = MODELS[method](1, 10, units).to(device)
    x = torch.rand(batch, steps, 1, device=device)
    run = DynamicalModel.run_steps if method in NAIVE else type(model).run_steps

    def forward_backward() -> None:
        model.zero_grad(set_to_none=True)
        model.readout(run(model, x)).sum().backward()
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    return forward_backward


def run_thread_scaling(shape: str, thread_counts: list[int], repeats: int, device: str) -> dict:
    """Engine, nn.LSTM and the matmuls alone at each thread count, interleaved: timings, the engine's ratio to its
    matmuls alone and each method's speed-up from the first thread count to the others."""
    steps, batch, units = SHAPES[shape][:3] if shape in SHAPES else map(int, shape.split(":"))
    print(f"threads {thread_counts}: T={steps}, batch={batch}, units={units}", flush=True)
    base = {m: make_case(m, steps, batch, units, device) for m in SCALING_METHODS[:-1]}
    base["matmuls"] = matmul_floor_case(steps, batch, units, device)
    runners, counts = {}, {}
    for threads in thread_counts:
        for method, case in base.items():
            runners[f"{method}@{threads}"] = _with_threads(case, threads)
            counts[f"{method}@{threads}"] = repeats
    timings = {name: summarize(t) for name, t in time_cases(runners, counts).items()}
    torch.set_num_threads(thread_counts[0])
    median = {name: t["median_s"] for name, t in timings.items()}
    first = thread_counts[0]
    return {
        "steps": steps,
        "batch": batch,
        "units": units,
        "threads": thread_counts,
        "results": timings,
        "engine_over_matmuls": {t: median[f"engine@{t}"] / median[f"matmuls@{t}"] for t in thread_counts},
        "speedup": {m: {t: median[f"{m}@{first}"] / median[f"{m}@{t}"] for t in thread_counts} for m in base},
    }


def _with_threads(case, threads: int):
    def run() -> None:
        torch.set_num_threads(threads)
        case()

    return run


def make_static_case(solver: str, official_diag_a: bool, batch: int, layers: list[int], device: str):
    """A zero-argument function running one training step's forward + backward of the static two-layer model."""
    torch.manual_seed(0)
    model = OrganicsStatic(784, 10, layers, "bounded", official_diag_a=official_diag_a, fixed_point_solver=solver).to(
        device
    )
    with torch.no_grad():
        for layer in model.layers:  # off the identity init, as after some training
            layer.W_r.add_(0.05 * torch.randn_like(layer.W_r))
    return static_training_step(model, batch, device)


def static_training_step(model: torch.nn.Module, batch: int, device: str):
    """A zero-argument function running forward + backward of a static MNIST model's loss on a random batch."""
    x, labels = torch.rand(batch, 784, device=device), torch.randint(0, 10, (batch,), device=device)

    def forward_backward() -> None:
        model.zero_grad(set_to_none=True)
        model.loss(x, labels)[0].backward()
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    return forward_backward


def run_static(shape: str, repeats: int, device: str) -> dict:
    """Both solvers side by side for each fixed-point variant: timings and the speedup of adjoint over autograd."""
    batch, units = shape.split(":")
    batch, layers = int(batch), [int(u) for u in units.split(",")]
    print(f"static two-layer ORGaNICs: batch={batch}, layers={layers}", flush=True)
    cases = []
    for official_diag_a in (False, True):
        print(f"  official_diag_a={official_diag_a}", flush=True)
        runners = {s: make_static_case(s, official_diag_a, batch, layers, device) for s in STATIC_SOLVERS}
        results = {s: summarize(t) for s, t in time_cases(runners, dict.fromkeys(STATIC_SOLVERS, repeats)).items()}
        speedup = results["autograd"]["median_s"] / results["adjoint"]["median_s"]
        cases.append({"official_diag_a": official_diag_a, "results": results, "speedup": speedup})
        print(f"  speedup of adjoint over autograd {speedup:.2f}x", flush=True)
    lu = fixed_point_solver.backend(torch.empty(1, device=device))
    return {"batch": batch, "layers": layers, "iterations": 10, "lu_backend": lu, "cases": cases}


def make_ssn_static_case(engine: str, batch: int, sizes: list[int], steps: int, device: str):
    """A zero-argument function running one training step's forward + backward of the static SSN."""
    torch.manual_seed(0)
    model = SSNStatic(784, 10, *sizes, steps=steps, engine=engine).to(device)
    return static_training_step(model, batch, device)


def run_ssn_static(shape: str, repeats: int, device: str) -> dict:
    """The static SSN's two engines side by side: timings and the speedup of fused over torch."""
    batch, sizes, steps = shape.split(":")
    batch, sizes, steps = int(batch), [int(n) for n in sizes.split(",")], int(steps)
    print(f"static SSN: batch={batch}, E,I={sizes}, steps={steps}", flush=True)
    runners = {name: make_ssn_static_case(engine, batch, sizes, steps, device) for name, engine in SSN_ENGINES.items()}
    results = {name: summarize(t) for name, t in time_cases(runners, dict.fromkeys(SSN_ENGINES, repeats)).items()}
    speedup = results["torch"]["median_s"] / results["fused"]["median_s"]
    print(f"  speedup of fused over torch {speedup:.2f}x", flush=True)
    fused_backend = ssn_backend(torch.empty(1, device=device))
    return {
        "batch": batch,
        "sizes": sizes,
        "steps": steps,
        "fused_backend": fused_backend,
        "results": results,
        "speedup": speedup,
    }


def matmul_floor_case(steps: int, batch: int, units: int, device: str):
    """A zero-argument function doing only the ORGaNICs engine's matrix multiplies for one forward + backward (the
    spectral_norm recurrence, d_input = 1), on cache-resident operands: a lower bound on the engine's time."""
    n = units
    torch.manual_seed(0)

    def mat(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, device=device)

    inputs, input_weights, drives = mat(steps * batch, 1), mat(3 * n, 1), mat(steps * batch, 3 * n)
    small, square, gate_in, gate_w = mat(batch, n), mat(n, n), mat(batch, 2 * n), mat(2 * n, 2 * n)
    small_out, gate_out = torch.empty_like(small), torch.empty_like(gate_in)
    x_t, grad_d = mat(batch, 1), mat(batch, 3 * n)
    grad_in, grad_square, grad_gate = (torch.zeros_like(w) for w in (input_weights, square, gate_w))

    def matmuls() -> None:
        torch.mm(inputs, input_weights.T, out=drives)  # input projection
        for _ in range(steps):
            for _ in range(2):  # forward, then backward: two n x n products (R, W) and the gates' 2n x 2n one
                torch.mm(small, square, out=small_out)
                torch.mm(small, square, out=small_out)
                torch.addmm(gate_in, gate_in, gate_w, out=gate_out)
            grad_in.addmm_(grad_d.T, x_t)  # the step's share of the weight gradients: input weights, W, R, G
            grad_square.addmm_(small.T, small)
            grad_square.addmm_(small.T, small)
            grad_gate.addmm_(gate_in.T, gate_in)
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    return matmuls


def time_cases(cases: dict, repeats: dict[str, int]) -> dict[str, list[float]]:
    """Wall-clock seconds per run, methods interleaved round by round."""
    for case in cases.values():
        case()
    times = {method: [] for method in cases}
    for r in range(max(repeats.values())):
        for method, case in cases.items():
            if r < repeats[method]:
                start = time.perf_counter()
                case()
                times[method].append(time.perf_counter() - start)
                print(f"    {method:9s} run {r + 1}: {times[method][-1]:.3f} s", flush=True)
    return times


def peak_memory_mb(method: str, steps: int, batch: int, units: int, device: str) -> float:
    """Peak memory growth (MiB) over one forward + backward, in this process (called in a fresh one). The engines'
    compiled libraries are loaded first: their code is not memory that BPTT uses."""
    case = make_case(method, steps, batch, units, device)
    for engine in ("auto", "stepped"):
        backend(torch.empty(0, device=device), engine)
    ssn_backend(torch.empty(0, device=device))
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        case()
        return (torch.cuda.max_memory_allocated() - before) / 2**20
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak RSS (VmHWM) to the current RSS
    before = _status_kib("VmRSS")
    case()
    return (_status_kib("VmHWM") - before) / 1024


def _status_kib(field: str) -> int:
    """A memory field of /proc/self/status (Linux), KiB."""
    return int(next(line for line in open("/proc/self/status") if line.startswith(field + ":")).split()[1])


def measure_memory(method: str, shape: tuple[int, int, int], args: argparse.Namespace) -> float:
    command = [
        sys.executable,
        __file__,
        "--memory-case",
        method,
        *map(str, shape),
        "--threads",
        str(args.threads),
        "--device",
        args.device,
    ]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["peak_mb"]


def hardware(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(device)
    try:
        model = next(line for line in open("/proc/cpuinfo") if line.startswith("model name")).split(":", 1)[1]
    except (OSError, StopIteration):
        model = platform.processor() or platform.machine()
    return f"{model.strip()}, {torch.get_num_threads()} threads of {os.cpu_count()} CPUs"


def summarize(times: list[float]) -> dict:
    return {
        "runs": len(times),
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "times_s": times,
    }


def markdown(record: dict) -> str:
    lines = [
        f"# Training throughput: {record['host']}",
        "",
        f"`{record['command']}`, git {record['git_revision']}, torch {record['env']['torch']}, "
        f"{record['device']} ({record['hardware']}), {record['threads']} thread(s), {record['date']}; ORGaNICs "
        f"engine steps: {record['engine_backend']}; subnormals flushed to zero: {record['flush_denormal']}.",
        "",
    ]
    if record["cases"]:
        lines += sequence_table(record["cases"])
        lines += rivals_table(record["cases"])
    if record.get("threads_section"):
        lines += threads_table(record["threads_section"])
    if record.get("static"):
        lines += static_table(record["static"])
    if record.get("ssn_static"):
        lines += ssn_static_table(record["ssn_static"])
    return "\n".join(lines)


def sequence_table(cases: list[dict]) -> list[str]:
    lines = [
        "Forward + backward of one batch; median [min-max] seconds over the runs given. Speedup = per-step / engine",
        "(ORGaNICs; SSN alike); engine/LSTM = time ratio at equal units. Stepped: the engine's steps driven from",
        "Python (engine=stepped, the engine before its native time loop). Peak memory: growth of the process's peak",
        "RSS over one forward + backward in a fresh process (CPU) or peak CUDA allocation above the start (GPU), MiB.",
        "Matmuls alone: the engine's matrix multiplies and nothing else, on cache-resident operands, driven from",
        "Python like the stepped engine's; per-step / matmuls alone bounds the speedup any engine doing these",
        "products from Python can reach.",
        "",
        "| T x batch x units | ORGaNICs per-step (s) | ORGaNICs stepped (s) | ORGaNICs engine (s) | nn.LSTM (s) "
        "| SSN per-step (s) | SSN engine (s) | matmuls alone (s) | engine / matmuls alone | stepped / matmuls alone "
        "| engine speed-up vs stepped | speedup vs per-step | engine / LSTM | SSN speedup "
        "| peak MiB per-step / stepped / engine / LSTM / SSN per-step / SSN engine |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for case in cases:
        res = case["results"]
        cells = [_timing(res[m]) for m in (*METHODS, "matmuls")]
        memory = " / ".join(f"{res[m]['peak_mb']:.0f}" if res[m].get("peak_mb") is not None else "-" for m in METHODS)
        lines.append(
            f"| {case['steps']} x {case['batch']} x {case['units']} | {' | '.join(cells)} "
            f"| {case['engine_over_matmuls']:.2f} | {case['stepped_over_matmuls']:.2f} "
            f"| {case['engine_speedup_vs_stepped']:.2f}x | {case['speedup_vs_naive']:.2f}x "
            f"| {case['engine_over_lstm']:.2f} | {case['ssn_speedup_vs_naive']:.2f}x | {memory} |"
        )
    return [*lines, ""]


def threads_table(section: dict) -> list[str]:
    """Each method at each thread count, with the engine's ratio to its matmuls alone and the speed-ups."""
    counts = section["threads"]
    lines = [
        f"Threads: forward + backward of one batch at {section['steps']} x {section['batch']} x {section['units']} "
        f"with {', '.join(map(str, counts))} torch threads, interleaved in one process; median [min-max] seconds;",
        f"speed-up = time at {counts[0]} thread(s) / time at the count of the row.",
        "",
        "| threads | ORGaNICs engine (s) | nn.LSTM (s) | matmuls alone (s) | engine / matmuls alone "
        "| speed-up: engine, LSTM, matmuls alone |",
        "|---|---|---|---|---|---|",
    ]
    for t in counts:
        cells = [_timing(section["results"][f"{m}@{t}"]) for m in SCALING_METHODS]
        speedups = ", ".join(f"{section['speedup'][m][t]:.2f}x" for m in SCALING_METHODS)
        lines.append(f"| {t} | {' | '.join(cells)} | {section['engine_over_matmuls'][t]:.2f} | {speedups} |")
    return [*lines, ""]


def rivals_table(cases: list[dict]) -> list[str]:
    """The rival stable RNNs beside nn.LSTM and the ORGaNICs engine of the same runs."""
    names = list(RIVALS)
    labels = ", ".join(RIVALS[n] for n in names)
    lines = [
        "The rival stable RNNs of paper Table 2 at the same shapes, timed in the same rounds (forward + backward",
        "of one batch, median [min-max] seconds); / LSTM and / engine = time ratio to nn.LSTM and to the ORGaNICs",
        f"engine above ({labels}); peak memory as above, MiB.",
        "",
        "| T x batch x units | nn.LSTM (s) | ORGaNICs engine (s) | "
        + " | ".join(f"{RIVALS[n]} (s)" for n in names)
        + f" | / LSTM: {labels} | / engine: {labels} | peak MiB {' / '.join(RIVALS[n] for n in names)} |",
        "|---|---|---|" + "---|" * len(names) + "---|---|---|",
    ]
    for case in cases:
        rivals = case["rivals"]
        cells = [
            _timing(case["results"]["lstm"]),
            _timing(case["results"]["engine"]),
            *(_timing(rivals[n]) for n in names),
        ]
        over_lstm = " / ".join(f"{case['rivals_over_lstm'][n]:.2f}" for n in names)
        over_engine = " / ".join(f"{case['rivals_over_engine'][n]:.2f}" for n in names)
        memory = " / ".join(
            f"{rivals[n]['peak_mb']:.0f}" if rivals[n].get("peak_mb") is not None else "-" for n in names
        )
        lines.append(
            f"| {case['steps']} x {case['batch']} x {case['units']} | {' | '.join(cells)} | {over_lstm} "
            f"| {over_engine} | {memory} |"
        )
    return [*lines, ""]


def static_table(static: dict) -> list[str]:
    lines = [
        f"Static two-layer ORGaNICs (layers {static['layers']}, learned W_r, Algorithm 1 with K = "
        f"{static['iterations']}), one training step (forward + backward) at batch {static['batch']}; median [min-max]",
        "seconds. autograd: autograd through torch.linalg.solve (fixed_point_solver=autograd); adjoint: hand-written",
        f"backward, LU by {static['lu_backend']} (fixed_point_solver=adjoint); speedup = autograd / adjoint.",
        "",
        "| fixed point | autograd (s) | adjoint (s) | speedup |",
        "|---|---|---|---|",
    ]
    for case in static["cases"]:
        variant = "official_diag_a: diag(a)" if case["official_diag_a"] else "diag(sqrt(a))"
        cells = " | ".join(_timing(case["results"][s]) for s in STATIC_SOLVERS)
        lines.append(f"| {variant} | {cells} | {case['speedup']:.2f}x |")
    return [*lines, ""]


def ssn_static_table(ssn: dict) -> list[str]:
    lines = [
        f"Static SSN ({ssn['sizes'][0]} E + {ssn['sizes'][1]} I, {ssn['steps']} Euler steps, autoencoder code), one "
        f"training step (forward + backward) at batch {ssn['batch']};",
        "median [min-max] seconds. torch: the SSN engine as torch operations (engine=torch); fused: engine=auto, here",
        f"{ssn['fused_backend']}; speedup = torch / fused.",
        "",
        "| E + I x steps | torch (s) | fused (s) | speedup |",
        "|---|---|---|---|",
        f"| {' + '.join(map(str, ssn['sizes']))} x {ssn['steps']} | {_timing(ssn['results']['torch'])} "
        f"| {_timing(ssn['results']['fused'])} | {ssn['speedup']:.2f}x |",
    ]
    return [*lines, ""]


def _timing(result: dict) -> str:
    return f"{result['median_s']:.3f} [{result['min_s']:.3f}-{result['max_s']:.3f}] (n={result['runs']})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--shapes",
        default="small,paper64,paper128",
        help=f"comma-separated presets {list(SHAPES)} or T:batch:units (default: all three)",
    )
    parser.add_argument("--quick", action="store_true", help="the small shape only, 3 runs per method")
    parser.add_argument("--repeats", type=int, help="timed runs of the engine and the LSTM (default: per shape)")
    parser.add_argument("--naive-repeats", type=int, help="timed runs of the per-step form (default: per shape)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: steady on a busy CPU)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument(
        "--keep-denormals",
        action="store_true",
        help="do not flush subnormal floats to zero (training flushes them by default)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "bench")
    parser.add_argument(
        "--static-shape",
        default=STATIC_SHAPE,
        help=f"batch:units per layer of the static model's section (default {STATIC_SHAPE})",
    )
    parser.add_argument("--static-repeats", type=int, default=5, help="timed runs per static case (default 5)")
    parser.add_argument("--static-only", action="store_true", help="only the static model's section")
    parser.add_argument(
        "--ssn-static-shape",
        default=SSN_STATIC_SHAPE,
        help=f"batch:E,I:steps of the static SSN's section (default {SSN_STATIC_SHAPE})",
    )
    parser.add_argument("--ssn-static-repeats", type=int, default=5, help="timed runs per static SSN engine")
    parser.add_argument("--ssn-static-only", action="store_true", help="only the static SSN's section")
    parser.add_argument(
        "--scaling-shape", default="paper64", help="T:batch:units or a preset of the threads section (default paper64)"
    )
    parser.add_argument(
        "--scaling-threads", default="1,2", help="thread counts of the threads section, comma-separated; none skips it"
    )
    parser.add_argument("--scaling-repeats", type=int, default=3, help="timed runs per method and thread count")
    parser.add_argument("--memory-case", nargs=4, metavar=("METHOD", "T", "BATCH", "UNITS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(not args.keep_denormals)
    if args.memory_case:
        method, *shape = args.memory_case
        print(json.dumps({"peak_mb": peak_memory_mb(method, *map(int, shape), args.device)}))
        return

    only_one = args.static_only or args.ssn_static_only
    names = [] if only_one else ["small"] if args.quick else args.shapes.split(",")
    engine_backend = backend(torch.empty(1, 1, 3, device=args.device))
    print(
        f"device: {args.device} ({hardware(args.device)}), torch {torch.__version__}, {args.threads} thread(s), "
        f"ORGaNICs engine steps: {engine_backend}"
    )
    cases = []
    for name in names:
        steps, batch, units, repeats, naive_repeats = SHAPES.get(name) or (*map(int, name.split(":")), 3, 2)
        repeats = 3 if args.quick else args.repeats or repeats
        naive_count = args.naive_repeats or min(repeats, naive_repeats)
        counts = {m: naive_count if m in NAIVE else repeats for m in (*METHODS, *RIVALS)}
        print(f"{name}: T={steps}, batch={batch}, units={units}", flush=True)
        runners = {m: make_case(m, steps, batch, units, args.device) for m in (*METHODS, *RIVALS)}
        runners["matmuls"], counts["matmuls"] = matmul_floor_case(steps, batch, units, args.device), repeats
        results = {m: summarize(t) for m, t in time_cases(runners, counts).items()}
        rivals = {m: results.pop(m) for m in RIVALS}
        if not args.no_memory:
            for m, timing in [*((m, results[m]) for m in METHODS), *rivals.items()]:
                timing["peak_mb"] = measure_memory(m, (steps, batch, units), args)
                print(f"    {m:9s} peak memory {timing['peak_mb']:.0f} MiB", flush=True)
        median = {m: results[m]["median_s"] for m in METHODS}
        cases.append(
            {
                "shape": name,
                "steps": steps,
                "batch": batch,
                "units": units,
                "results": results,
                "speedup_vs_naive": median["naive"] / median["engine"],
                "engine_speedup_vs_stepped": median["stepped"] / median["engine"],
                "stepped_over_matmuls": median["stepped"] / results["matmuls"]["median_s"],
                "engine_over_lstm": median["engine"] / median["lstm"],
                "ssn_speedup_vs_naive": median["ssn-naive"] / median["ssn"],
                "engine_over_matmuls": median["engine"] / results["matmuls"]["median_s"],
                "speedup_bound_by_matmuls": median["naive"] / results["matmuls"]["median_s"],
                "rivals": rivals,
                "rivals_over_lstm": {m: t["median_s"] / median["lstm"] for m, t in rivals.items()},
                "rivals_over_engine": {m: t["median_s"] / median["engine"] for m, t in rivals.items()},
            }
        )
        print(
            f"  speedup vs per-step {cases[-1]['speedup_vs_naive']:.2f}x, "
            f"engine/LSTM {cases[-1]['engine_over_lstm']:.2f}, "
            f"SSN speedup {cases[-1]['ssn_speedup_vs_naive']:.2f}x, engine/its matmuls alone "
            f"{cases[-1]['engine_over_matmuls']:.2f}",
            flush=True,
        )
        print(
            "  rivals / LSTM: "
            + ", ".join(f"{RIVALS[m]} {r:.2f}" for m, r in cases[-1]["rivals_over_lstm"].items())
            + "; / engine: "
            + ", ".join(f"{RIVALS[m]} {r:.2f}" for m, r in cases[-1]["rivals_over_engine"].items()),
            flush=True,
        )

    record = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "git_revision": git_revision(ROOT),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "device": args.device,
        "hardware": hardware(args.device),
        "threads": args.threads,
        "engine_backend": engine_backend,
        "flush_denormal": not args.keep_denormals,
        "env": environment(args.device),
        "cases": cases,
        "threads_section": None
        if only_one or args.scaling_threads == "none"
        else run_thread_scaling(
            args.scaling_shape, [int(t) for t in args.scaling_threads.split(",")], args.scaling_repeats, args.device
        ),
        "static": None if args.ssn_static_only else run_static(args.static_shape, args.static_repeats, args.device),
        "ssn_static": None
        if args.static_only
        else run_ssn_static(args.ssn_static_shape, args.ssn_static_repeats, args.device),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / record["host"]
    Path(f"{stem}.json").write_text(json.dumps(record, indent=2) + "\n")
    Path(f"{stem}.md").write_text(markdown(record))
    print(markdown(record))
    print(f"wrote {stem}.json and {stem}.md")


if __name__ == "__main__":
    main()
