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
    python benchmarks/overlap.py --report benchmarks/results/overlap-DATE.json
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

import harness

STUDY_SHAPE = (300, 1920, 1920)


#: The pinned reference row: the training patch as tile at overlap 0.5 (the blending defaults of 2026-12-01).
REFERENCE = ((16, 64, 64), 0.5)


def build_parser() -> argparse.ArgumentParser:
    """The command line; ``--tiles`` is read as z y x triples."""
    parser = harness.parser(__doc__)
    parser.add_argument("--overlaps", type=float, nargs="+", default=[0.5, 0.33, 0.25])
    parser.add_argument("--tiles", type=int, nargs="+", default=[16, 64, 64, 16, 128, 128], help="z y x, repeated")
    parser.add_argument("--model", default="data/06_models/fusemycell_unet.pt")
    parser.add_argument("--raw-dir", type=Path, default=Path("data/01_raw/synthetic"))
    parser.add_argument("--split", type=Path, default=Path("data/02_intermediate/split.csv"))
    parser.add_argument("--split-name", default="test", help="which split's volumes (default test)")
    parser.add_argument("--repeat", type=int, default=1, help="timed runs per configuration (default 1)")
    parser.add_argument("--workdir", type=Path, default=None)
    return parser


def report(results: dict) -> None:
    """The Markdown of a result; ``time x ref`` and ``N_SSIM - ref`` against the pinned ``REFERENCE`` row."""
    p = results["parameters"]
    pairs, shapes = results["pairs"], results["shapes"]
    names = ", ".join(f"{pair} ({'x'.join(map(str, shapes[pair]))})" for pair in pairs)
    model = results["model"]
    print(f"### Overlap and tile size: time and N_SSIM on the {p['split_name']} volumes of the simulated data\n")
    print(
        f"Model: `{p['model']}` ({model['depth']} levels, {model['base_channels']} base channels, "
        f"best epoch {model['epoch']}, validation N_SSIM {model['val_nssim']:.4f}); volumes: {names}; CPU float32, "
        f"batch 4, {p['repeat']} timed run(s) per volume (median). Reference row: tile "
        f"{'x'.join(map(str, REFERENCE[0]))}, overlap {REFERENCE[1]:g}.\n"
    )
    rows = results["rows"]
    reference = next((r for r in rows if (tuple(r["tile"]), r["overlap"]) == REFERENCE), None)
    lines = []
    for r in rows:
        mean = statistics.mean(r["scores"].values())
        time_ratio = (
            f"{r['per_tile'] * r['tiles'] / (reference['per_tile'] * reference['tiles']):.2f}" if reference else "-"
        )
        score_diff = f"{mean - statistics.mean(reference['scores'].values()):+.4f}" if reference else "-"
        lines.append(
            [
                "x".join(map(str, r["tile"])),
                f"{r['overlap']:g}",
                r["tiles"],
                f"{statistics.mean(r['times']):.2f}",
                f"{1000 * r['per_tile']:.0f}",
                time_ratio,
                *(f"{r['scores'][pair]:.4f}" for pair in pairs),
                f"{mean:.4f}",
                score_diff,
                r["study_tiles"],
                f"{r['study_tiles'] * r['per_tile'] / 60:.0f}",
            ]
        )
    header = [
        "tile",
        "overlap",
        "tiles (all volumes)",
        "time per volume (s, mean)",
        "ms per tile",
        "time x ref",
        *(f"N_SSIM {pair}" for pair in pairs),
        "N_SSIM mean",
        "N_SSIM - ref",
        "tiles of a 300x1920x1920 study",
        "projected time of that study here (min)",
    ]
    harness.print_lines(harness.table(header, lines))
    print(
        "\nInput SSIM (single view vs fused): "
        + ", ".join(f"{pair} {results['input_ssim'][pair]:.4f}" for pair in pairs)
        + "\n"
    )
    harness.print_lines(harness.provenance(results))


def run(args: argparse.Namespace) -> dict:
    """Every configuration on every test volume: tiles, times and N_SSIM."""

    from fusemycell.inference.apply import InferenceSettings, make_backend, predict_file
    from fusemycell.inference.tiling import TileGrid
    from fusemycell.io.formats import read_volume
    from fusemycell.io.tiff import save_volume
    from fusemycell.metrics.ssim import normalized_ssim, ssim
    from fusemycell.models.model_file import load_model

    if len(args.tiles) % 3:
        raise SystemExit("--tiles takes z y x triples")
    args.tiles = [tuple(args.tiles[i : i + 3]) for i in range(0, len(args.tiles), 3)]
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
                settings = InferenceSettings(device="cpu", amp=False, tile_zyx=tile, overlap=overlap, tiling="blend")
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

    validation = model.card.validation
    return {
        "model": {
            "depth": model.config.depth,
            "base_channels": model.config.base_channels,
            "epoch": validation.epoch if validation else None,
            "val_nssim": validation.val_nssim if validation else float("nan"),
        },
        "pairs": pairs,
        "shapes": {pair: list(shape) for pair, shape in shapes.items()},
        "input_ssim": {pair: float(value) for pair, value in input_ssim.items()},
        "rows": [
            {
                "tile": list(tile),
                "overlap": overlap,
                "tiles": tiles,
                "times": times,
                "per_tile": per_tile,
                "scores": {pair: float(value) for pair, value in scores.items()},
                "study_tiles": study_tiles,
            }
            for tile, overlap, tiles, times, per_tile, scores, study_tiles in rows
        ],
    }


def main(argv: list[str] | None = None) -> int:
    """Run every configuration; write the result; print its table."""
    parser = build_parser()
    return harness.main(__file__, argv, parser, run, report)


if __name__ == "__main__":
    sys.exit(main())
