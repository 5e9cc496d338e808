import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread():
    """Small CPU tensors run fastest, and most steadily, on one thread."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
