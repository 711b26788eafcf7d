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
    python benchmarks/steps.py --report benchmarks/results/steps-DATE.json
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time

import _measure
import harness
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


def run(args: argparse.Namespace) -> dict:
    """Every option, round-robin: the median over rounds of patches and optimizer steps per minute."""
    options = list(itertools.product(SHAPES, (False, True), (False, True)))
    measured: dict = {option: [] for option in options}
    for round_index in range(args.rounds):
        for option in options:
            (batch, accumulation), bf16, channels_last = option
            measured[option].append(measure(batch, accumulation, bf16, channels_last, args.seconds))
            print(f"round {round_index + 1}: {option} {measured[option][-1]}", file=sys.stderr, flush=True)
    rows = []
    for option in options:
        (batch, accumulation), bf16, channels_last = option
        rows.append(
            {
                "batch": batch,
                "accumulation": accumulation,
                "precision": "bf16" if bf16 else "float32",
                "layout": "channels last" if channels_last else "default",
                "patches_per_minute": harness.summary([r[0] for r in measured[option]]),
                "steps_per_minute": harness.summary([r[1] for r in measured[option]]),
            }
        )
    return {"patch_zyx": list(PATCH), "rows": rows}


def report(results: dict) -> None:
    """The Markdown table of a result: each option against the pinned reference row (``REFERENCE``)."""
    reference = next(r for r in results["rows"] if _key(r) == REFERENCE)
    ref_steps = reference["steps_per_minute"]["median"]
    print(f"### Training steps of the `mac` U-Net, patches {'x'.join(map(str, results['patch_zyx']))}\n")
    print(
        f"Each option {results['parameters']['seconds']:g} s after two warm-up steps, round-robin, median [IQR] over "
        f"{results['parameters']['rounds']} rounds. Reference: {_label(REFERENCE)} (`mac`'s setting before).\n"
    )
    rows = []
    for row in results["rows"]:
        patches, steps = row["patches_per_minute"], row["steps_per_minute"]
        rows.append(
            [
                f"{row['batch']} x {row['accumulation']}",
                row["precision"],
                row["layout"],
                f"{patches['median']:.0f} [{patches['iqr']:.0f}]",
                f"{steps['median']:.0f} [{steps['iqr']:.0f}]",
                f"{steps['median'] / ref_steps:.2f}",
            ]
        )
    header = ["batch x accumulation", "precision", "layout", "patches / min", "optimizer steps / min", "steps x ref"]
    harness.print_lines(harness.table(header, rows, "lllrrr"))
    print()
    harness.print_lines(harness.provenance(results))


#: The pinned reference row: ``mac``'s training step before 2026-12-03 (2 x 4, float32, default layout).
REFERENCE = (2, 4, "float32", "default")


def _key(row: dict) -> tuple:
    return (row["batch"], row["accumulation"], row["precision"], row["layout"])


def _label(key: tuple) -> str:
    return f"{key[0]} x {key[1]}, {key[2]}, {key[3]} layout"


def main(argv: list[str] | None = None) -> int:
    """Measure every option; write the result; print its Markdown table."""
    parser = harness.parser(__doc__)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=2)
    return harness.main(__file__, argv, parser, run, report)


if __name__ == "__main__":
    sys.exit(main())
