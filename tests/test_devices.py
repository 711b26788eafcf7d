"""Device and precision choices (``fusemycell.devices``), on any machine: CUDA is simulated where needed."""

from __future__ import annotations

import pytest
import torch

from fusemycell import devices
from fusemycell.devices import DeviceError, local_cuda_device, memory_format, resolve_device, resolve_precision


def test_a_launched_process_takes_its_own_gpu_of_the_machine():
    assert local_cuda_device({}, count=4) == torch.device("cuda")
    assert local_cuda_device({"LOCAL_RANK": "2"}, count=4) == torch.device("cuda", 2)
    # more processes than GPUs: they share them round-robin rather than all landing on GPU 0
    assert local_cuda_device({"LOCAL_RANK": "5"}, count=4) == torch.device("cuda", 1)
    assert local_cuda_device({"LOCAL_RANK": "not a number"}, count=4) == torch.device("cuda")


def test_a_process_spawned_by_training_takes_the_gpu_of_its_rank_unless_a_launcher_said():
    assert local_cuda_device({}, count=2, rank=3) == torch.device("cuda", 1)
    assert local_cuda_device({"LOCAL_RANK": "0"}, count=2, rank=3) == torch.device("cuda", 0)


def test_auto_under_a_launcher_means_the_local_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert resolve_device("auto") == torch.device("cuda", 1)
    assert resolve_device("cuda") == torch.device("cuda", 1)
    monkeypatch.delenv("LOCAL_RANK")
    assert resolve_device("auto") == torch.device("cuda")


def test_an_unavailable_cuda_is_explained_naming_the_setting(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceError, match=r"inference\.device is 'cuda'"):
        resolve_device("cuda", "inference.device")
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("native", [True, False])
def test_cpu_mixed_precision_is_bf16_only_where_the_cpu_computes_it(monkeypatch, native):
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: native)
    cpu = torch.device("cpu")
    auto = resolve_precision(cpu, amp=True)
    assert auto.enabled is native
    assert auto.dtype == (torch.bfloat16 if native else torch.float32)
    assert not auto.use_scaler
    # forced bf16 is honoured anywhere; amp off is float32 everywhere
    assert resolve_precision(cpu, amp=True, amp_dtype="bfloat16").dtype == torch.bfloat16
    off = resolve_precision(cpu, amp=False, amp_dtype="bfloat16")
    assert not off.enabled and off.dtype == torch.float32


def test_3d_convolutions_run_channels_last_on_cpu():
    layout = memory_format(torch.device("cpu"))
    assert layout == torch.channels_last_3d
    batch = torch.rand(2, 1, 4, 6, 8).contiguous(memory_format=layout)
    assert batch.is_contiguous(memory_format=torch.channels_last_3d)
