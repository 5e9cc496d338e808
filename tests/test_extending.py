"""docs/extending.md's recipe, as a user outside the package follows it: a tiny cell and its YAML in a config dir
of their own, one sweep against a suite model, one table; and a class that does not meet the contract refused in
one line before any run dir exists."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import CLI_ENV, ROOT, one_line_error, run_cli, run_in_process

CELL = """
import torch
from torch import nn

from organics_bench.models.base import DynamicalModel


class TinyElman(DynamicalModel):
    def __init__(self, d_input: int, n_classes: int, hidden_size: int = 16) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.w_in, self.w_rec = nn.Linear(d_input, hidden_size), nn.Linear(hidden_size, hidden_size, bias=False)
        self.out = nn.Linear(hidden_size, n_classes)

    def initial_state(self, batch: int) -> torch.Tensor:
        return self.w_rec.weight.new_zeros(batch, self.hidden_size)

    def step(self, x_t: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.w_in(x_t) + self.w_rec(state))

    def readout(self, state: torch.Tensor) -> torch.Tensor:
        return self.out(state)

    def recurrent_matrix(self) -> torch.Tensor:
        return self.w_rec.weight


class PlainRNN(nn.Module):
    def __init__(self, d_input: int, n_classes: int, hidden_size: int = 16) -> None:
        super().__init__()
        self.rnn, self.out = nn.RNN(d_input, hidden_size, batch_first=True), nn.Linear(hidden_size, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.rnn(x)[0][:, -1])


class NoStep(DynamicalModel):
    def readout(self, state: torch.Tensor) -> torch.Tensor:
        return state
"""
SMOKE = ["debug=smoke", "task=smnist", "task.source=bundled", "task.image_size=14", "model.hidden_size=8"]


def user_folder(root: Path, module: str) -> Path:
    """my_bench/conf/{<module>.py, model/*.yaml}, as docs/extending.md lays it out."""
    conf = root / "my_bench" / "conf"
    (conf / "model").mkdir(parents=True)
    (conf / f"{module}.py").write_text(CELL)
    for name, target in (("tiny_elman", "TinyElman"), ("plain_rnn", "PlainRNN"), ("no_step", "NoStep")):
        (conf / "model" / f"{name}.yaml").write_text(f"_target_: {module}.{target}\nhidden_size: 8\n")
    (conf / "model" / "gone.yaml").write_text("_target_: no_such_module.Cell\n")
    return conf.parent


def test_the_recipe_compares_a_cell_from_outside_with_a_suite_model_in_one_table(tmp_path):
    bench = user_folder(tmp_path, "my_cells")
    sweep = run_cli(
        "-m", "--config-dir", "conf", "model=tiny_elman,lstm", *SMOKE, "publish=true", "paths.results_dir=results",
        cwd=bench,
    )  # fmt: skip
    assert sweep.returncode == 0, sweep.stderr
    report = subprocess.run(
        [str(Path(sys.executable).parent / "organics-bench-report"), "results/runs/smnist", "--table", "table.md"],
        cwd=bench,
        capture_output=True,
        text=True,
        env={**CLI_ENV, "PATH": str(Path(sys.executable).parent)},
        timeout=120,
    )
    assert report.returncode == 0, report.stderr
    rows = [line for line in (bench / "table.md").read_text().splitlines() if "| smnist | 0 | 0.01 | ok |" in line]
    assert sorted(row.split("|")[1].strip() for row in rows) == ["lstm", "tiny_elman"]
    (published,) = (bench / "results" / "runs" / "smnist" / "tiny_elman").glob("*/seed0.json")
    record = json.loads(published.read_text())
    source = bench / "conf" / "my_cells.py"
    assert record["external_code"] == [
        {
            "section": "model",
            "target": "my_cells.TinyElman",
            "file": str(source.resolve()),
            "sha256": hashlib.sha256(source.read_bytes()).hexdigest(),
        }
    ]
    assert record["git_revision"] and record["spectral_radius"]["final"] is not None
    assert json.loads(published.with_name("seed0.diagnostics.json").read_text())["gradient_flow"]  # a DynamicalModel
    (lstm,) = (bench / "results" / "runs" / "smnist" / "lstm").glob("*/seed0.json")
    assert json.loads(lstm.read_text())["external_code"] == []
    assert not (ROOT / "conf" / "my_cells.py").exists()


@pytest.fixture
def import_path_kept():
    """The CLI, run in this process, puts the config dir on sys.path and imports the user's module: undone here."""
    saved_path, saved_modules = sys.path[:], set(sys.modules)
    yield
    sys.path[:] = saved_path
    for name in set(sys.modules) - saved_modules:
        if name.startswith("contract_cells"):
            del sys.modules[name]


@pytest.mark.parametrize(
    ("model", "words"),
    [
        (
            "plain_rnn",
            "contract_cells.PlainRNN does not meet the model contract: it lacks kind, loss, recurrent_matrix",
        ),
        ("no_step", "contract_cells.NoStep does not meet the model contract: it lacks initial_state, step;"),
        ("gone", "no_such_module.Cell cannot be imported (ModuleNotFoundError: No module named 'no_such_module')"),
    ],
)
def test_a_model_that_breaks_the_contract_is_one_line_before_any_run_dir(tmp_path, import_path_kept, model, words):
    bench = user_folder(tmp_path, "contract_cells")
    result = run_in_process("--config-dir", "conf", f"model={model}", *SMOKE[:-1], cwd=bench)
    line = one_line_error(result)
    assert line.startswith("error: model._target_=") and words in line, line
    assert not (bench / "outputs").exists()
