"""Benchmark: tile overlap and tile size, a measured trade-off between time and N_SSIM.

For every tile size (``--tiles``, default 16x64x64 and 16x128x128) and overlap
(``--overlaps``, default 0.5, 0.33, 0.25), the held-out test volumes of the
simulated data (``data/02_intermediate/split.csv``, split ``test``; raw files in
``--raw-dir``, default ``data/01_raw/synthetic``) are predicted file to file
exactly as the evaluation pipeline does (``predict_file`` + ``save_volume``,
CPU float32, batch 4) with a trained model (``--model``, default
``data/06_models/fusemycell_unet.pt``), and scored with the challenge's metric:
``N_SSIM = (SSIM(prediction, fused) - SSIM(single view, fused)) / (1 - SSIM(single view, fused))``.

Reported per configuration: tiles and wall time per volume (median of
``--repeat`` runs), seconds per tile, N_SSIM per volume and their mean, and, for
the 10 minutes per case, the tiles of a 300x1920x1920 study and its projected
time at the measured seconds per tile. Writing the simulated data and the model
needs ``kedro run --pipelines simulation,preprocessing,patching,training --env mac``.

Usage::

    python benchmarks/overlap.py [--overlaps 0.5 0.33 0.25] [--tiles 16 64 64 16 128 128] [--repeat 1]
"""

from __future__ import annotations

import argparse
import csv
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import _measure
import numpy as np

STUDY_SHAPE = (300, 1920, 1920)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--overlaps", type=float, nargs="+", default=[0.5, 0.33, 0.25])
    parser.add_argument("--tiles", type=int, nargs="+", default=[16, 64, 64, 16, 128, 128], help="z y x, repeated")
    parser.add_argument("--model", default="data/06_models/fusemycell_unet.pt")
    parser.add_argument("--raw-dir", type=Path, default=Path("data/01_raw/synthetic"))
    parser.add_argument("--split", type=Path, default=Path("data/02_intermediate/split.csv"))
    parser.add_argument("--split-name", default="test", help="which split's volumes (default test)")
    parser.add_argument("--repeat", type=int, default=1, help="timed runs per configuration (default 1)")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args(argv)
    if len(args.tiles) % 3:
        parser.error("--tiles takes z y x triples")
    args.tiles = [tuple(args.tiles[i : i + 3]) for i in range(0, len(args.tiles), 3)]
    return args


def report(args: argparse.Namespace, model, pairs, shapes, input_ssim, *, rows) -> None:  # noqa: ANN001
    """Print the Markdown table."""
    import torch

    names = ", ".join(f"{p} ({'x'.join(map(str, shapes[p]))})" for p in pairs)
    validation = model.card.validation
    print(f"## Overlap and tile size: time and N_SSIM on the {args.split_name} volumes of the simulated data\n")
    print(
        f"Model: `{args.model}` ({model.config.depth} levels, {model.config.base_channels} base channels, "
        f"best epoch {validation.epoch if validation else '?'}, validation N_SSIM "
        f"{validation.val_nssim if validation else float('nan'):.4f}); volumes: {names}; CPU float32, batch 4, "
        f"{args.repeat} timed run(s) per volume (median).\n"
    )
    print(
        "| tile | overlap | tiles (all volumes) | time per volume (s, mean) | ms per tile | "
        + " | ".join(f"N_SSIM {p}" for p in pairs)
        + " | N_SSIM mean | tiles of a 300x1920x1920 study | projected time of that study on this CPU (min) |"
    )
    print("|---|---:|---:|---:|---:|" + "---:|" * len(pairs) + "---:|---:|---:|")
    for tile, overlap, tiles, times, per_tile, scores, study_tiles in rows:
        mean = statistics.mean(scores.values())
        print(
            f"| {'x'.join(map(str, tile))} | {overlap:g} | {tiles} | {statistics.mean(times):.2f} "
            f"| {1000 * per_tile:.0f} | "
            + " | ".join(f"{scores[p]:.4f}" for p in pairs)
            + f" | {mean:.4f} | {study_tiles} | {study_tiles * per_tile / 60:.0f} |"
        )
    print("\nInput SSIM (single view vs fused): " + ", ".join(f"{p} {input_ssim[p]:.4f}" for p in pairs))
    print("\nMachine:\n")
    print(
        "\n".join(
            _measure.machine_description(
                f"numpy {np.__version__}, torch {torch.__version__}",
                cpus=f"- CPUs: 2 (torch threads {torch.get_num_threads()})",
            )
        )
    )


def main(argv: list[str] | None = None) -> int:
    """Run every configuration and print the table."""

    from fusemycell.inference.apply import InferenceSettings, make_backend, predict_file
    from fusemycell.inference.tiling import TileGrid
    from fusemycell.io.formats import read_volume
    from fusemycell.io.tiff import save_volume
    from fusemycell.metrics.ssim import normalized_ssim, ssim
    from fusemycell.models.checkpoint import load_model

    args = parse_args(argv)
    with args.split.open() as handle:
        pairs = [row["pair"] for row in csv.DictReader(handle) if row["split"] == args.split_name]
    if not pairs:
        raise SystemExit(f"no {args.split_name} pair in {args.split}")
    model = load_model(args.model)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="overlap_"))
    workdir.mkdir(parents=True, exist_ok=True)
    angle = {p: args.raw_dir / f"{p}_angle.tif" for p in pairs}
    fused = {p: read_volume(args.raw_dir / f"{p}_fused.tif").data for p in pairs}
    input_ssim = {p: ssim(read_volume(angle[p]).data, fused[p]) for p in pairs}
    shapes = {p: read_volume(angle[p], lazy=True).shape for p in pairs}
    rows = []
    try:
        for tile in args.tiles:
            for overlap in args.overlaps:
                settings = InferenceSettings(device="cpu", amp=False, tile_zyx=tile, overlap=overlap)
                backend = make_backend(model, settings)
                times, scores, tiles = [], {}, 0
                for pair in pairs:
                    runs = []
                    for _ in range(args.repeat):
                        out = workdir / f"{pair}.tif"
                        start = time.perf_counter()
                        save_volume(out, predict_file(str(angle[pair]), backend, settings, model.card))
                        runs.append(time.perf_counter() - start)
                    times.append(statistics.median(runs))
                    tiles += len(TileGrid(shapes[pair], tile, overlap))
                    prediction = read_volume(out).data
                    scores[pair] = normalized_ssim(ssim(prediction, fused[pair]), input_ssim[pair])
                per_tile = sum(times) / tiles
                study_tiles = len(TileGrid(STUDY_SHAPE, tile, overlap))
                rows.append((tile, overlap, tiles, times, per_tile, scores, study_tiles))
                print(f"  tile {tile} overlap {overlap}: {sum(times):.1f} s, N_SSIM {scores}", file=sys.stderr)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)

    report(args, model, pairs, shapes, input_ssim, rows=rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
