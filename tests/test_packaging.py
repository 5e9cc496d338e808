"""The console script finds its configs from the editable install and from a built wheel."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.helpers import ROOT, run_cli, smoke_overrides


def test_editable_install_finds_conf_from_any_directory(tmp_path):
    result = run_cli("model=organics_fixed_tau", "--cfg", "job", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "learn_tau: false" in result.stdout


def test_every_console_script_is_installed_and_names_a_function():
    """The tests call these entry points in-process (`organics_bench.cli:main`, `leaderboard:main`, ...): the
    scripts that pyproject.toml declares are installed beside this interpreter and load those same functions."""
    from importlib.metadata import entry_points

    section = (ROOT / "pyproject.toml").read_text().split("[project.scripts]\n", 1)[1].split("\n[", 1)[0]
    declared = dict(line.replace('"', "").split(" = ") for line in section.strip().splitlines())
    assert "organics-bench" in declared and len(declared) >= 5, declared
    installed = {ep.name: ep for ep in entry_points(group="console_scripts") if ep.name in declared}
    assert {name: ep.value for name, ep in installed.items()} == declared
    for name, ep in installed.items():
        assert (Path(sys.executable).parent / name).is_file(), name
        function = ep.load()  # imports the module
        assert (function.__module__, function.__name__) == (ep.module, ep.attr), name


@pytest.mark.slow
def test_built_wheel_carries_configs_and_data_and_runs(tmp_path):
    build = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    wheel = next(tmp_path.glob("organics_bench-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in (
        "organics_bench/conf/config.yaml",
        "organics_bench/conf/model/organics.yaml",
        "organics_bench/conf/experiment/mini/smnist_rows.yaml",
        "organics_bench/data/mnist_5k.npz",
        "organics_bench/models/organics_kernels.c",
    ):
        assert required in names, required
    target = tmp_path / "site"
    install = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-compile",
            "--target",
            str(target),
            str(wheel),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr[-2000:]
    env = {**os.environ, "PYTHONPATH": str(target), "WANDB_MODE": "disabled", "TQDM_DISABLE": "1"}
    where = subprocess.run(
        [sys.executable, "-c", "import organics_bench; print(organics_bench.__file__)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert where.stdout.startswith(str(target)), where.stdout + where.stderr  # the wheel, not the checkout
    kernels = subprocess.run(
        [
            sys.executable,
            "-W",
            "error",
            "-c",
            "import torch; from organics_bench.models.organics_engine import backend; print(backend(torch.zeros(1)))",
        ],
        cwd=tmp_path,
        env={**env, "ORGANICS_BENCH_CACHE": str(tmp_path / "cache")},
        capture_output=True,
        text=True,
    )
    assert kernels.stdout.strip() == "native", kernels.stderr[-2000:]  # built from the wheel's own sources
    run = subprocess.run(
        [
            str(target / "bin" / "organics-bench"),
            *smoke_overrides("lstm", "psmnist", tmp_path),
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert (tmp_path / "run" / "metrics.json").exists()
