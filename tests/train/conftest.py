"""One torch thread for the training tests: the models are tiny, and on a machine whose cores are busy
with other work a second OpenMP thread stalls every op at its barrier (measured on 2 busy cores:
train_digits 43 s with one thread, 621 s with two)."""
import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(before)
