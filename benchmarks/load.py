"""Benchmark (load): memory stays flat over a long training run and over inference on many files.

Two parts, each in a fresh Python process so that one does not hide the other:

``training``
    :func:`fusemycell.training.engine.train` for ``--epochs`` epochs (default 40)
    on CPU, on small synthetic patch stores (96 training and 16 validation
    patches of 16x32x32; the target is a smoothed copy of the input), U-Net depth
    2 with 8 base channels, batch 4. Per epoch, the engine's own peak resident
    memory (``EpochMetrics.peak_rss_mb``: RSS sampled after every batch and after
    validation). A leak of one batch's tensors, of the DataLoader or of the
    history would show as growth from epoch to epoch.

``inference``
    ``--files`` volumes (default 20) of 16x192x192 uint16, written as tiled
    BigTIFFs, predicted one after the other in one process with the project's
    streaming path (:func:`fusemycell.inference.apply.predict_file` +
    :func:`fusemycell.io.tiff.save_volume`, untrained U-Net, tile 16x64x64), as
    the inference pipeline does. Per file: the peak RSS while it ran (a sampling
    thread, 5 ms) and the RSS after it.

Reported: the first value, the median of the first five after the first (warm-up:
allocator pools, lazily imported modules), the median of the last five, the
largest, and the least-squares slope over everything after the warm-up (MiB per
epoch or per file). The script exits with status 1 when the last five exceed
the warm-up five by more than ``--tolerance-mib`` (default 25 MiB) or the slope
would add that much over 100 more epochs or files. The Markdown report goes to
stdout.

Usage::

    python benchmarks/load.py [--epochs 40] [--files 20] [--tolerance-mib 25]
    python benchmarks/load.py --report benchmarks/results/load-DATE.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import harness
import numpy as np


def _rss_mib() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def run_training(epochs: int) -> dict:
    import pandas as pd
    import torch

    from fusemycell.patching.store import write_patch_store
    from fusemycell.training.config import TrainingConfig
    from fusemycell.training.engine import train

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    patch = (16, 32, 32)
    with tempfile.TemporaryDirectory() as tmp:
        stores = []
        for name, count, seed in (("train", 96, 0), ("val", 16, 1)):
            rng = np.random.default_rng(seed)
            angles = rng.random((count, *patch)).astype(np.float32)
            targets = 0.5 * angles + 0.5 * np.roll(angles, 1, axis=-1) + 0.1
            index = pd.DataFrame(
                {
                    "pair": "image_0_nucleus",
                    "origin_z": 0,
                    "origin_y": range(count),
                    "origin_x": 0,
                    "spacing_z_um": 1.0,
                    "spacing_y_um": 0.5,
                    "spacing_x_um": 0.5,
                }
            )
            directory = Path(tmp) / name
            write_patch_store(directory, index, patch, "float32", [(i, angles[i], targets[i]) for i in range(count)])
            stores.append(directory)
        config = TrainingConfig(
            monitor="val_nssim",
            device="cpu",
            epochs=epochs,
            batch_size=4,
            checkpoint_dir=str(Path(tmp) / "ckpt"),
            model={"depth": 2, "base_channels": 8},
            learning_rate=1e-3,
            early_stopping_patience=0,  # never stop early
        )
        started = time.perf_counter()
        result = train(config, *stores)
        elapsed = time.perf_counter() - started
    return {
        "values": [m.peak_rss_mb for m in result.history],
        "unit": "epoch",
        "seconds": elapsed,
        "detail": f"{len(result.history)} epochs of 96 patches 16x32x32, U-Net depth 2 / 8 channels, batch 4",
    }


class _Peak(threading.Thread):
    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = 0.0
        self.running = True

    def run(self) -> None:
        while self.running:
            self.peak = max(self.peak, _rss_mib())
            time.sleep(0.005)


def run_inference(files: int) -> dict:
    import torch

    from fusemycell.inference.apply import InferenceSettings, make_backend, predict_file
    from fusemycell.io.tiff import save_volume, write_volume
    from fusemycell.models.card import card_for
    from fusemycell.models.config import UNetConfig
    from fusemycell.models.model_file import TrainedModel
    from fusemycell.models.unet import UNet3D

    torch.manual_seed(0)
    config = UNetConfig(depth=2, base_channels=8, spacing_zyx=(2.0, 0.4, 0.4))
    model = TrainedModel(UNet3D(config), card_for(config, (16, 32, 32)))
    settings = InferenceSettings(device="cpu", tile_zyx=(16, 64, 64), batch_size=4)
    backend = make_backend(model, settings)
    rng = np.random.default_rng(0)
    peaks, after = [], []
    with tempfile.TemporaryDirectory() as tmp:
        inputs, outputs = Path(tmp) / "in", Path(tmp) / "out"
        inputs.mkdir()
        for index in range(files):
            volume = rng.gamma(2.0, 300.0, size=(16, 192, 192)).astype(np.uint16)
            write_volume(inputs / f"image_{index}_nucleus_angle.tif", volume, (2.0, 0.4, 0.4), {"channel": "nucleus"})
        started = time.perf_counter()
        for path in sorted(inputs.glob("*.tif")):
            sampler = _Peak()
            sampler.peak = _rss_mib()
            sampler.start()
            save_volume(outputs / path.name, predict_file(str(path), backend, settings, model.card))
            sampler.running = False
            sampler.join()
            peaks.append(sampler.peak)
            after.append(_rss_mib())
        elapsed = time.perf_counter() - started
    return {
        "values": peaks,
        "after": after,
        "unit": "file",
        "seconds": elapsed,
        "detail": f"{files} files of 16x192x192 uint16 (1.1 MiB each), tile 16x64x64, untrained U-Net depth 2 / 8",
    }


def summarise(values: list[float], warmup: int = 1) -> dict:
    steady = np.asarray(values[warmup:], dtype=float)
    x = np.arange(len(steady), dtype=float)
    slope = float(np.polyfit(x, steady, 1)[0]) if len(steady) >= 3 else float("nan")
    return {
        "first": values[0],
        "early": float(np.median(steady[:5])),
        "late": float(np.median(steady[-5:])),
        "max": float(np.max(values)),
        "slope": slope,
    }


def run(args: argparse.Namespace) -> dict:
    """Both parts, each in a fresh interpreter: per-epoch / per-file peaks, their summary and the verdict."""
    rows, failures = [], []
    for part in ("training", "inference"):
        child = subprocess.run(
            [sys.executable, __file__, "--part", part, "--epochs", str(args.epochs), "--files", str(args.files)],
            capture_output=True,
            text=True,
            check=True,
        )
        result = json.loads(child.stdout.strip().splitlines()[-1])
        summary = summarise(result["values"])
        growth = summary["late"] - summary["early"]
        projected = summary["slope"] * 100
        ok = growth <= args.tolerance_mib and projected <= args.tolerance_mib
        if not ok:
            failures.append(f"{part}: growth {growth:+.1f} MiB, slope x 100 {projected:+.1f} MiB")
        rows.append(
            {
                "part": part,
                "unit": result["unit"],
                "detail": result["detail"],
                "seconds": result["seconds"],
                "values": [round(v, 1) for v in result["values"]],
                "after": [round(v, 1) for v in result.get("after", [])],
                "summary": summary,
                "growth": growth,
                "flat": ok,
            }
        )
    return {"rows": rows, "failures": failures}


def report(results: dict) -> None:
    """The Markdown of a result: each part's steady peak against its own early epochs or files (the reference)."""
    print(f"### Memory over {results['parameters']['epochs']} epochs and {results['parameters']['files']} files\n")
    columns = [
        "part",
        "workload",
        "wall time (s)",
        "first (MiB)",
        "median of 5 after warm-up (MiB)",
        "median of last 5 (MiB)",
        "max (MiB)",
        "slope (MiB per unit)",
        "growth, last 5 - early 5 (MiB)",
        "flat",
    ]
    rows = []
    for row in results["rows"]:
        summary = row["summary"]
        rows.append(
            [
                f"{row['part']} (peak RSS per {row['unit']})",
                row["detail"],
                f"{row['seconds']:.0f}",
                f"{summary['first']:.0f}",
                f"{summary['early']:.0f}",
                f"{summary['late']:.0f}",
                f"{summary['max']:.0f}",
                f"{summary['slope']:+.3f}",
                f"{row['growth']:+.1f}",
                "yes" if row["flat"] else "**no**",
            ]
        )
    harness.print_lines(harness.table(columns, rows, "llrrrrrrrl"))
    print(f"\nFlat: growth and 100 x the slope at most {results['parameters']['tolerance_mib']:g} MiB.")
    for row in results["rows"]:
        print(f"\n{row['part']}, per {row['unit']} (MiB): " + ", ".join(f"{v:.0f}" for v in row["values"]))
    print()
    harness.print_lines(harness.provenance(results))


def measure_child(args: argparse.Namespace) -> int | None:
    if not args.part:
        return None
    result = run_training(args.epochs) if args.part == "training" else run_inference(args.files)
    print(json.dumps(result))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run both parts (result in ``benchmarks/results/``), or one part with ``--part``."""
    parser = harness.parser(__doc__)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--tolerance-mib", type=float, default=25.0)
    parser.add_argument("--part", choices=("training", "inference"), help=argparse.SUPPRESS)
    os.environ.setdefault("FUSEMYCELL_PROGRESS", "off")
    return harness.main(__file__, argv, parser, run, report, child=measure_child)


if __name__ == "__main__":
    raise SystemExit(main())
