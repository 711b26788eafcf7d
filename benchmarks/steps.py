"""Benchmark: optimizer steps and patches per minute of the ``mac`` training on this CPU, option by option.

What buys quality on a laptop is learning per minute. The script times the training step the
engine runs (``fusemycell.training.engine``: the ``mac`` U-Net, depth 3, 8 base channels, patches
16x64x64, the project's loss: L1 + (1 - SSIM) with the volume's data range, AdamW, gradient clipping)
on random patches, for each combination of

* batch size and accumulation: ``2 x 1`` (one optimizer step per batch), ``4 x 1``, ``2 x 4``
  (four batches per optimizer step: ``mac``'s setting before);
* precision: float32, or bf16 autocast (only worthwhile where the CPU computes bf16 natively);
* memory layout: PyTorch's default (NCDHW) or channels last (NDHWC, what the engine uses).

Each combination runs ``--seconds`` (default 20) after two warm-up steps, all in one process, one
after another, round-robin ``--rounds`` times (default 2) so that a slow phase of the machine hits
every option; reported: the median over rounds of patches per minute and optimizer steps per minute.

Usage::

    python benchmarks/steps.py [--seconds 20] [--rounds 2]
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import time

import _measure
import torch

from fusemycell.models.unet import UNet3D
from fusemycell.training.config import LossWeights
from fusemycell.training.losses import image_loss

PATCH = (16, 64, 64)
SHAPES = ((2, 1), (4, 1), (2, 4))


def measure(batch: int, accumulation: int, bf16: bool, channels_last: bool, seconds: float) -> tuple[float, float]:
    """Patches and optimizer steps per minute of one option."""
    torch.manual_seed(0)
    layout = torch.channels_last_3d if channels_last else torch.contiguous_format
    network = UNet3D(_measure.mac_unet_config(spacing_zyx=(1.0, 0.39, 0.39))).to(memory_format=layout)
    optimizer = torch.optim.AdamW(network.parameters(), lr=1e-3)
    inputs = torch.rand(batch, 1, *PATCH).contiguous(memory_format=layout)
    targets, data_range = torch.rand(batch, 1, *PATCH), torch.full((batch,), 3.0)

    def step() -> None:
        for _ in range(accumulation):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                prediction = network(inputs)
            (image_loss(prediction, targets, LossWeights(), data_range) / accumulation).backward()
        torch.nn.utils.clip_grad_norm_(network.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step(), step()
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step()
        steps += 1
    minutes = (time.perf_counter() - start) / 60
    return steps * batch * accumulation / minutes, steps / minutes


def main(argv: list[str] | None = None) -> int:
    """Measure every option; print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    options = list(itertools.product(SHAPES, (False, True), (False, True)))
    results: dict = {option: [] for option in options}
    for round_index in range(args.rounds):
        for option in options:
            (batch, accumulation), bf16, channels_last = option
            results[option].append(measure(batch, accumulation, bf16, channels_last, args.seconds))
            print(f"round {round_index + 1}: {option} {results[option][-1]}", file=sys.stderr, flush=True)
    print(f"## Training steps of the `mac` U-Net, patches {'x'.join(map(str, PATCH))}, {time.strftime('%Y-%m-%d')}\n")
    print("| batch x accumulation | precision | layout | patches / min | optimizer steps / min |")
    print("|---|---|---|---:|---:|")
    for option in options:
        (batch, accumulation), bf16, channels_last = option
        patches = statistics.median(r[0] for r in results[option])
        steps = statistics.median(r[1] for r in results[option])
        layout = "channels last" if channels_last else "default"
        print(
            f"| {batch} x {accumulation} | {'bf16' if bf16 else 'float32'} | {layout} | {patches:.0f} | {steps:.0f} |"
        )
    capability = torch.backends.cpu.get_cpu_capability()
    print("\nMachine:\n")
    print(
        "\n".join(
            _measure.machine_description(
                f"torch {torch.__version__}",
                cpus=f"- CPUs: {os.cpu_count()} ({_measure.cpu_model()}), PyTorch CPU capability {capability}",
            )
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
