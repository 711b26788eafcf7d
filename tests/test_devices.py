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


def test_the_container_quota_is_read_from_cgroup_v2_then_v1():
    assert devices.cgroup_cpu_quota(cpu_max="150000 100000") == pytest.approx(1.5)
    assert devices.cgroup_cpu_quota(cpu_max="max 100000") is None  # no quota
    assert devices.cgroup_cpu_quota(cpu_max="", v1=("200000", "100000")) == pytest.approx(2.0)
    assert devices.cgroup_cpu_quota(cpu_max="", v1=("-1", "100000")) is None
    assert devices.cgroup_cpu_quota(cpu_max="", v1=(None, None)) is None  # neither file


def test_the_usable_cpus_are_the_affinity_capped_by_the_quota():
    assert devices.usable_cpus(affinity=8, quota=2.0) == 2
    assert devices.usable_cpus(affinity=2, quota=8.0) == 2
    assert devices.usable_cpus(affinity=4, quota=1.5) == 1  # 1.5 CPUs run one thread at full speed
    assert devices.usable_cpus(affinity=4, quota=0.5) == 1


def test_threads_leave_the_cpus_other_programs_keep_busy():
    assert devices.thread_count(2, busy_elsewhere=0.1) == 2
    assert devices.thread_count(2, busy_elsewhere=1.0) == 1  # one busy program on 2 cores: one thread
    assert devices.thread_count(2, busy_elsewhere=3.0) == 1  # never fewer than one
    assert devices.thread_count(16, busy_elsewhere=3.6) == 12
    assert devices.thread_count(8, busy_elsewhere=0.0, processes=2) == 4  # DDP ranks share the CPUs
    before, after = devices.CpuTimes(busy_s=100.0, own_s=10.0), devices.CpuTimes(busy_s=118.0, own_s=18.0)
    assert devices.cpus_busy_elsewhere(before, after, wall_s=10.0) == pytest.approx(1.0)  # 18 - 8 s in 10 s


class _Moments:
    """``cpu_times`` and ``time.perf_counter`` of a machine where another program starts, then stops."""

    def __init__(self, samples, seconds_between=10.0):
        self.samples = list(samples)
        self.wall = 0.0
        self.seconds_between = seconds_between

    def cpu_times(self):
        busy, own = self.samples.pop(0)
        return devices.CpuTimes(busy, own)

    def perf_counter(self):
        self.wall += self.seconds_between
        return self.wall


def test_threads_are_resized_as_other_programs_come_and_go(monkeypatch):
    moments = _Moments([(0, 0), (20, 20), (40, 30), (60, 50)])  # idle; another program busy for 10 s; idle
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(devices, "usable_cpus", lambda: 2)
    monkeypatch.setattr(devices, "cpu_times", moments.cpu_times)
    monkeypatch.setattr(devices, "time", moments)
    chosen = []
    monkeypatch.setattr(torch, "set_num_threads", chosen.append)
    threads = devices.CpuThreads()
    assert threads.threads == 2 and threads.resize() == 2  # we alone used both CPUs
    assert threads.resize() == 1  # 20 s busy, 10 of them ours: another program took one CPU
    assert threads.resize() == 2  # it stopped
    assert chosen == [2, 1, 2]


def test_a_short_burst_of_another_program_changes_no_thread(monkeypatch):
    moments = _Moments([(0, 0), (9, 5)], seconds_between=5.0)  # 0.8 CPU busy elsewhere, over 5 s only
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(devices, "usable_cpus", lambda: 2)
    monkeypatch.setattr(devices, "cpu_times", moments.cpu_times)
    monkeypatch.setattr(devices, "time", moments)
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)
    threads = devices.CpuThreads()
    assert threads.resize() == 2 and moments.samples == [(9, 5)]  # too short a look: not even sampled


def test_an_explicit_omp_num_threads_is_left_alone(monkeypatch):
    # the same busy machine as above, where an adaptive sizing would drop to one thread
    moments = _Moments([(0, 0), (20, 20), (40, 30)])
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    monkeypatch.setattr(devices, "usable_cpus", lambda: 2)
    monkeypatch.setattr(devices, "cpu_times", moments.cpu_times)
    monkeypatch.setattr(devices, "time", moments)
    chosen = []
    monkeypatch.setattr(torch, "set_num_threads", chosen.append)
    threads = devices.CpuThreads()
    assert threads.adaptive is False
    assert threads.resize() == threads.threads and threads.resize() == threads.threads
    assert chosen == []  # never set: neither the usable CPUs (2) nor the load changed the user's 3
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert devices.CpuThreads(processes=2).adaptive is False  # a sibling rank is not another program
