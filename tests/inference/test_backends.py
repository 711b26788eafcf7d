"""The PyTorch backend on a CPU takes the threads of the CPUs this process may use, not every core."""

import torch

from fusemycell import devices
from fusemycell.inference.backends import TorchBackend


def test_a_cpu_backend_sizes_torch_threads_from_the_usable_cpus(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(devices, "usable_cpus", lambda: 1)  # e.g. taskset -c 0, or a 1-CPU container quota
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(4)
        backend = TorchBackend(torch.nn.Identity(), device="cpu", amp=False)
        assert backend.threads is not None and backend.threads.threads == 1
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_an_explicit_omp_num_threads_is_left_alone(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    monkeypatch.setattr(devices, "usable_cpus", lambda: 1)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        TorchBackend(torch.nn.Identity(), device="cpu", amp=False)
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)
