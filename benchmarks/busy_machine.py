"""Benchmark: training steps and inference on an idle machine and beside N CPU-heavy programs.

A user ran ``kedro run --env mac`` with another program busy on the same laptop: with three CPU-heavy
processes on 2 cores, an epoch took about 2,070 s instead of about 60 s. PyTorch's CPU kernels
synchronise their threads many times per operation, and a thread that shares its core with another
program makes every sibling wait for it. This script measures, side by side in one run:

* **training**: optimizer steps per minute of the ``mac`` training step (the U-Net of depth 3 with 8
  base channels, patches 16x64x64, batch 2, the project's loss, AdamW, clipping, channels last), timed
  for ``--seconds`` after two warm-up steps;
* **inference**: seconds to predict one ``--volume`` (default 32x256x256) with the inference tiling;

for each number of competing processes in ``--competitors`` (default 0, 1, 2, 3; each a busy loop on
one CPU, started before and stopped after the measurement), and two thread policies:

* ``every core``: ``torch.set_num_threads(os.cpu_count())``, what a process takes by default;
* ``sized``: the rule of :class:`fusemycell.devices.CpuThreads`, what training does: the CPUs this
  process may use (affinity, container quota), less those the other programs kept busy over a
  two-second look.

Each measurement runs in a fresh interpreter (``--measure``), after the competitors have run for a
second. Reported: threads, steps per minute and the slowdown against idle, inference seconds and its
slowdown, and the machine; the result goes to ``benchmarks/results/`` (``--report FILE`` prints it again).

Usage::

    python benchmarks/busy_machine.py [--seconds 30] [--competitors 0 1 2 3] [--volume 32 256 256]
    python benchmarks/busy_machine.py --report benchmarks/results/busy-machine-2026-12-07.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import _measure
import harness

PATCH = (16, 64, 64)
POLICIES = ("every core", "sized")
#: One CPU-heavy program: a busy loop (it never sleeps, as a compile or another training would not).
COMPETITOR = "while True: pass"


def set_threads(policy: str) -> int:
    """Apply ``policy`` to torch's intra-op threads; the threads chosen."""
    import torch

    from fusemycell import devices

    if policy == "every core":
        torch.set_num_threads(os.cpu_count() or 1)
        return torch.get_num_threads()
    # CpuThreads' rule (it looks at least LOAD_WINDOW_S over training epochs), over a 2-second look while
    # this process is idle
    before, started = devices.cpu_times(), time.perf_counter()
    time.sleep(2.0)
    busy = devices.cpus_busy_elsewhere(before, devices.cpu_times(), time.perf_counter() - started)
    torch.set_num_threads(devices.thread_count(devices.usable_cpus(), busy))
    return torch.get_num_threads()


def measure(policy: str, seconds: float, volume: tuple[int, int, int]) -> dict[str, float]:
    """Training steps per minute and the seconds of one prediction, under ``policy``."""
    import numpy as np
    import torch

    from fusemycell.inference.predictor import predict_whole_volume
    from fusemycell.inference.tiling import TileSettings
    from fusemycell.models.card import card_for
    from fusemycell.models.unet import UNet3D
    from fusemycell.training.config import LossWeights
    from fusemycell.training.losses import image_loss

    threads = set_threads(policy)
    torch.manual_seed(0)
    config = _measure.mac_unet_config(spacing_zyx=(1.0, 0.39, 0.39))
    layout = torch.channels_last_3d
    network = UNet3D(config).to(memory_format=layout)
    optimizer = torch.optim.AdamW(network.parameters(), lr=1e-3)
    inputs = torch.rand(2, 1, *PATCH).contiguous(memory_format=layout)
    targets, data_range = torch.rand(2, 1, *PATCH), torch.full((2,), 3.0)

    def step() -> None:
        image_loss(network(inputs), targets, LossWeights(), data_range).backward()
        torch.nn.utils.clip_grad_norm_(network.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step(), step()
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or steps < 2:
        step()
        steps += 1
    steps_per_minute = 60 * steps / (time.perf_counter() - start)

    network.eval()
    single_view = np.random.default_rng(0).random(volume, dtype=np.float32)
    tiling = TileSettings(tile_zyx=(16, 128, 128), batch_size=1)
    start = time.perf_counter()
    predict_whole_volume(network, card_for(config, PATCH), single_view, None, "cpu", tiling=tiling, amp=False)
    return {"threads": threads, "steps_per_minute": steps_per_minute, "inference_s": time.perf_counter() - start}


def start_competitors(count: int) -> list[subprocess.Popen]:
    """``count`` CPU-heavy processes (a busy loop each), running until stopped."""
    return [subprocess.Popen([sys.executable, "-c", COMPETITOR]) for _ in range(count)]


def stop(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        process.terminate()
    for process in processes:
        process.wait()


def run(args: argparse.Namespace) -> list[dict]:
    """Every (competitors, policy) row, measured in a fresh interpreter beside its competitors."""
    rows = []
    # the policies choose the threads: an OMP_NUM_THREADS of the caller would fix them for both
    environment = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    for count in args.competitors:
        competitors = start_competitors(count)
        try:
            time.sleep(1.0)  # they are running before the measurement looks
            for policy in POLICIES:
                result = _measure.run_measurement(
                    __file__,
                    ["--measure", policy, "--seconds", str(args.seconds), "--volume", *map(str, args.volume)],
                    f"{policy} beside {count} competitor(s)",
                    env=environment,
                )
                rows.append({"competitors": count, "policy": policy, **result})
                print(f"{count} competitor(s), {policy}: {result}", file=sys.stderr, flush=True)
        finally:
            stop(competitors)
    return rows


def table(rows: list[dict]) -> list[str]:
    """Markdown: one row per (competitors, policy), slowdowns against the same policy idle (the pinned reference)."""
    idle = {row["policy"]: row for row in rows if row["competitors"] == 0}
    lines = []
    for row in rows:
        base = idle.get(row["policy"])
        step_x = f"{base['steps_per_minute'] / row['steps_per_minute']:.2f}" if base else "n/a"
        infer_x = f"{row['inference_s'] / base['inference_s']:.2f}" if base else "n/a"
        lines.append(
            [
                row["competitors"],
                row["policy"],
                row["threads"],
                f"{row['steps_per_minute']:.0f}",
                step_x,
                f"{row['inference_s']:.1f}",
                infer_x,
            ]
        )
    header = ["competing processes", "threads policy", "threads", "steps / min", "x idle", "inference s", "x idle"]
    return harness.table(header, lines, "rlrrrrr")


def report(results: dict) -> None:
    """The Markdown of a result (a file of 2026-12-07 written before the harness holds only ``date`` and ``rows``)."""
    p = results.get("parameters", {})
    shape = "x".join(map(str, p.get("volume", [32, 256, 256])))
    seconds = p.get("seconds")
    timed = f" for {seconds:g} s" if seconds is not None else ""
    print(
        f"`mac` training step (batch 2, patches {'x'.join(map(str, PATCH))}){timed}; "
        f"inference of one {shape} volume. Reference: the same threads policy with no competing process.\n"
    )
    harness.print_lines(table(results["rows"]))
    print()
    harness.print_lines(harness.provenance(results))


def run_all(args: argparse.Namespace) -> dict:
    if 0 not in args.competitors:
        args.competitors = [0, *args.competitors]  # the idle rows are the reference
    return {"rows": run(args)}


def measure_child(args: argparse.Namespace) -> int | None:
    if not args.measure:
        return None
    print(json.dumps(measure(args.measure, args.seconds, tuple(args.volume))))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = harness.parser(__doc__)
    parser.add_argument("--seconds", type=float, default=30.0, help="training steps timed per row (default 30)")
    parser.add_argument("--competitors", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--volume", type=int, nargs=3, default=[32, 256, 256], help="z y x predicted")
    parser.add_argument("--measure", choices=POLICIES, help=argparse.SUPPRESS)
    return harness.main(__file__, argv, parser, run_all, report, child=measure_child)


if __name__ == "__main__":
    sys.exit(main())
