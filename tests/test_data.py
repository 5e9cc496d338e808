"""The MNIST loaders on files in torchvision's real format, the bundled digits, permutation and split."""

import numpy as np
import pytest
import torch

from organics_bench.errors import UserError
from organics_bench.tasks.sequential_mnist import SequentialMNIST
from tests.helpers import write_fake_mnist


def make_task(root, **overrides):
    settings = dict(name="psmnist", source="torchvision", data_dir=str(root), download=False, permute=True, val_size=20)
    return SequentialMNIST(**(settings | overrides))


def test_reads_real_format_files_and_keeps_pixels_in_unit_range(tmp_path):
    train_x, train_y, test_x, test_y = write_fake_mnist(tmp_path)
    data = make_task(tmp_path, permute=False).load()
    assert data.train.x.shape == (100, 784, 1) and data.val.x.shape == (20, 784, 1)
    assert data.test.x.shape == (40, 784, 1)
    torch.testing.assert_close(data.test.x[:, :, 0], torch.from_numpy(test_x).reshape(40, -1).float() / 255)
    assert torch.equal(data.test.y, torch.from_numpy(test_y).long())
    assert 0.0 <= data.train.x.min() and data.train.x.max() <= 1.0


def test_split_is_disjoint_fixed_and_independent_of_run_seed(tmp_path):
    train_x, *_ = write_fake_mnist(tmp_path)
    flat = torch.from_numpy(train_x).reshape(len(train_x), -1).float() / 255
    first, second = make_task(tmp_path, permute=False).load(), make_task(tmp_path, permute=False).load()
    torch.manual_seed(123)  # the global seed must not move the split
    third = make_task(tmp_path, permute=False).load()

    def rows(split):
        return {tuple(r.tolist()) for r in split.x[:, :, 0]}

    assert rows(first.train).isdisjoint(rows(first.val))
    assert len(rows(first.train) | rows(first.val)) == len(flat)
    assert torch.equal(first.val.x, second.val.x) and torch.equal(first.val.x, third.val.x)
    other = make_task(tmp_path, permute=False, split_seed=5).load()
    assert not torch.equal(first.val.x, other.val.x)


def test_split_matches_torch_random_split_with_seed_73(tmp_path):
    """The reference code uses random_split([57000, 3000], generator seed 73); same indices here."""
    train_x, *_ = write_fake_mnist(tmp_path)
    data = make_task(tmp_path, permute=False).load()
    subsets = torch.utils.data.random_split(range(120), [100, 20], generator=torch.Generator().manual_seed(73))
    expected = torch.from_numpy(train_x[list(subsets[1].indices)]).reshape(20, -1).float() / 255
    torch.testing.assert_close(data.val.x[:, :, 0], expected)


def test_permutation_is_fixed_and_shared_by_all_splits(tmp_path):
    _, _, test_x, _ = write_fake_mnist(tmp_path)
    task = make_task(tmp_path)
    perm = task.permutation()
    assert torch.equal(perm, torch.randperm(784, generator=torch.Generator().manual_seed(73)))
    data, plain = task.load(), make_task(tmp_path, permute=False).load()
    torch.testing.assert_close(data.test.x[:, :, 0], plain.test.x[:, perm, 0])
    torch.testing.assert_close(data.train.x[:, :, 0], plain.train.x[:, perm, 0])
    torch.testing.assert_close(data.val.x[:, :, 0], plain.val.x[:, perm, 0])
    assert data.record["permutation_seed"] == 73 and data.record["split_seed"] == 73


def test_row_layout_and_downsampling(tmp_path):
    _, _, test_x, _ = write_fake_mnist(tmp_path)
    rows = make_task(tmp_path, permute=False, layout="rows").load()
    assert rows.test.x.shape == (40, 28, 28) and rows.train.x.shape[1:] == (28, 28)
    torch.testing.assert_close(rows.test.x, torch.from_numpy(test_x).float() / 255)
    small = make_task(tmp_path, permute=False, image_size=14).load()
    assert small.test.x.shape == (40, 196, 1)
    expected = torch.from_numpy(test_x[0, :2, :2]).float().mean() / 255
    assert small.test.x[0, 0, 0].item() == pytest.approx(expected.item(), abs=1e-6)
    assert make_task(tmp_path, layout="rows", image_size=14).spec.d_input == 14


def test_bundled_digits_are_real_mnist_split_into_three_parts():
    task = SequentialMNIST(name="smnist", source="bundled", layout="rows")
    data = task.load()
    assert (len(data.train), len(data.val), len(data.test)) == (3500, 500, 1000)
    all_labels = torch.cat([data.train.y, data.val.y, data.test.y])
    assert torch.equal(torch.bincount(all_labels), torch.full((10,), 500))
    mean_ink = data.train.x.mean().item()
    assert 0.10 < mean_ink < 0.16  # MNIST's mean pixel is ~0.13; noise would be ~0.5
    assert torch.equal(data.test.x, SequentialMNIST(name="smnist", source="bundled", layout="rows").load().test.x)


def test_missing_files_give_one_actionable_line(tmp_path):
    with pytest.raises(UserError) as err:
        make_task(tmp_path / "empty").load()
    message = str(err.value)
    assert "\n" not in message
    assert "train-images-idx3-ubyte" in message and "task.source=bundled" in message
    assert "ORGANICS_BENCH_DATA" in message


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_files_are_reported_not_crashed_on(tmp_path, damage):
    write_fake_mnist(tmp_path)
    target = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"
    content = target.read_bytes()
    target.write_bytes(content[: len(content) // 2] if damage == "truncate" else b"\x07" * len(content))
    with pytest.raises(UserError, match="corrupt or truncated|could not read"):
        make_task(tmp_path).load()


def test_bad_task_options_are_rejected():
    for bad in (dict(layout="columns"), dict(source="kaggle"), dict(image_size=10), dict(val_size=0)):
        with pytest.raises(UserError):
            SequentialMNIST(name="smnist", **bad)
    with pytest.raises(UserError, match="no training digits"):
        SequentialMNIST(name="smnist", source="bundled", val_size=4000).load()


def test_data_dir_that_is_a_file_is_reported(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UserError, match="data dir"):
        make_task(blocker / "data", download=True).load()


def test_bundled_file_is_not_noise():
    data = SequentialMNIST(name="smnist", source="bundled", layout="rows").load()
    # digits are mostly background: over 70% of pixels are exactly zero in real MNIST
    assert (data.test.x == 0).float().mean().item() > 0.7
    assert np.isclose(data.test.x.max().item(), 1.0)


def test_static_mnist_keeps_images_and_the_sequential_split(tmp_path):
    from organics_bench.tasks.static_images import StaticMNIST

    write_fake_mnist(tmp_path)
    static = StaticMNIST(name="mnist", data_dir=str(tmp_path), download=False, val_size=20).load()
    sequential = make_task(tmp_path, permute=False).load()
    assert static.train.x.shape == (100, 1, 28, 28) and static.test.x.shape == (40, 1, 28, 28)
    torch.testing.assert_close(static.val.x.flatten(1), sequential.val.x[:, :, 0])
    assert torch.equal(static.val.y, sequential.val.y)


def test_cifar10_reads_torchvision_batches_and_standardises(tmp_path):
    from organics_bench.tasks.static_images import CIFAR_MEAN, StaticCIFAR10
    from tests.helpers import write_fake_cifar10

    write_fake_cifar10(tmp_path, n_train_per_batch=20, n_test=30)
    data = StaticCIFAR10(name="cifar10", data_dir=str(tmp_path), download=False, val_size=10).load()
    assert data.train.x.shape == (90, 3, 32, 32) and data.val.x.shape == (10, 3, 32, 32)
    assert data.test.x.shape == (30, 3, 32, 32) and data.test.y.dtype == torch.long
    import pickle

    raw = pickle.loads((tmp_path / "cifar-10-batches-py" / "test_batch").read_bytes())
    first = torch.from_numpy(raw["data"][0].reshape(3, 32, 32)).float() / 255
    torch.testing.assert_close(data.test.x[0, 0] * 0.2470 + CIFAR_MEAN[0], first[0], atol=1e-5, rtol=0)
    assert data.test.y[0].item() == raw["labels"][0]


def test_cifar10_missing_or_damaged_is_one_line(tmp_path):
    from organics_bench.tasks.static_images import StaticCIFAR10
    from tests.helpers import write_fake_cifar10

    with pytest.raises(UserError, match="CIFAR-10 not found") as err:
        StaticCIFAR10(name="cifar10", data_dir=str(tmp_path), download=False).load()
    assert "\n" not in str(err.value)
    write_fake_cifar10(tmp_path)
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:100])
    with pytest.raises(UserError, match="corrupt or truncated"):
        StaticCIFAR10(name="cifar10", data_dir=str(tmp_path), download=False, val_size=10).load()


def test_parity_labels_padding_and_length_splits():
    from organics_bench.tasks.parity import Parity

    settings = dict(
        name="parity",
        train_min_length=3,
        train_max_length=12,
        test_lengths=[12, 30],
        n_train=500,
        n_val=50,
        n_test=40,
        seed=1,
    )
    task = Parity(**settings)
    data = task.load()
    assert data.train.x.shape == (500, 12, 2) and task.spec.d_input == 2 and task.spec.n_classes == 2
    ones = data.train.x[:, :, 1].sum(1)
    assert torch.equal(data.train.y, ones.long() % 2)
    present = data.train.x.sum(-1)
    lengths = present.sum(1)
    assert lengths.min() >= 3 and lengths.max() <= 12 and len(set(lengths.tolist())) > 5
    assert all(torch.equal(row[int(12 - n) :], torch.ones(int(n))) for row, n in zip(present[:50], lengths[:50]))
    assert set(data.extra_tests) == {"len12", "len30"} and data.extra_tests["len30"].x.shape == (40, 30, 2)
    assert torch.equal(data.test.x, data.extra_tests["len12"].x)
    assert 0.3 < data.train.y.float().mean() < 0.7
    again = Parity(**settings).load()
    assert torch.equal(again.train.x, data.train.x)
    summary = Parity.summarize({"len12": 1.0, "len30": 0.6, "len64": 0.995})
    assert summary == {"acc_by_length": {12: 1.0, 30: 0.6, 64: 0.995}, "longest_solved_99": 64}


def test_parity_curriculum_grows_the_allowed_length():
    from organics_bench.tasks.parity import Parity

    task = Parity(
        name="parity",
        train_min_length=1,
        train_max_length=40,
        test_lengths=[40],
        n_train=2000,
        n_val=10,
        n_test=10,
        curriculum_epochs=4,
    )
    data = task.load()
    lengths = data.train.x.sum((1, 2))
    assert [task.curriculum_length(e) for e in range(6)] == [11, 20, 30, 40, 40, 40]
    for epoch in range(5):
        mask = data.curriculum(epoch)
        assert torch.equal(mask, lengths <= task.curriculum_length(epoch))
    assert 0.2 < data.curriculum(0).float().mean() < 0.3 and data.curriculum(3).all()
    assert Parity(name="parity").load().curriculum is None
