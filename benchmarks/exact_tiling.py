"""Benchmark: exact tiling against today's blended tiles and MONAI's sliding window, in one run.

Network: the ``mac`` U-Net (depth 3, 8 base channels, residual, voxel size 1 x 0.39 x 0.39 um), weights
from its initialisation with a random head (``torch.manual_seed(0)``), CPU.

Part 1, file to file at full width (planes of 1920 x 1920 uint16; ``--depths``, default 40 and 80):
a study-like file is written (smooth blobs and noise, made plane by plane), then predicted with
``predict_file`` + ``save_volume`` (exact percentiles, the streaming predictor, uint16 output, BigTIFF)

``today``
    the code and default of revision ``TODAY_REVISION`` (before exact tiling; extracted with
    ``git archive`` and imported in the child): instance normalisation, Gaussian-blended tiles of the
    16x64x64 training patch, overlap 0.5, 4 tiles per call, float32;
``exact-fp32``
    ``normalization: none``, exact tiling planned from ``inference.memory_gb`` (2), float32;
``exact``
    the same with ``amp: true`` (bf16 autocast where the CPU computes bf16 natively: the new default).

Each in a fresh process: wall time, the time projected to a 300-plane study (time x 300 / depth,
stated as projected), peak RSS over the process's baseline (imports, network), the memory the
planner counted for exact tiling (``tiling.host_bytes`` + the network's tile) and network voxel
evaluations per output voxel. All three run at the first depth; the deeper files run ``exact`` only,
to show whether the default's memory is flat in depth.

The planner's choice (tile, core, evaluations per voxel) for 40-300 planes and 1-8 GiB is computed
first and printed as a table: nothing runs for it.

Part 2, in memory (``--shape``, default 64x512x512, float32, the ``none`` network): the whole volume
in one call is the reference; ``exact`` (planned tiles), ``monai`` (``sliding_window_inference``,
roi 16x64x64, overlap 0.5, Gaussian, 4 per call) and ``monai-large`` (roi 32x256x256): time, peak
RSS and the largest difference to the whole-volume prediction.

MONAI is not a project dependency: ``pip install --no-deps monai`` for part 2 (``--skip-monai``
without it).

Usage::

    python benchmarks/exact_tiling.py [--depths 40 80] [--methods today exact-fp32 exact] [--shape 64 512 512]
        [--skip-file] [--skip-memory] [--skip-monai] [--workdir DIR] [--out results.json]
    python benchmarks/exact_tiling.py --report benchmarks/results/exact-tiling-DATE.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import _measure
import harness
import numpy as np
from _measure import peak_rss_kib, run_measurement
from sliding_window import PlaneSource, make_volume

ROOT = Path(__file__).resolve().parents[1]
SPACING_ZYX = (1.0, 0.39, 0.39)
TODAY_TILE = (16, 64, 64)
TODAY_REVISION = "613ff09"
STUDY_DEPTH = 300
CHILD_TIMEOUT_S = 3600
FILE_METHODS = ("today", "exact-fp32", "exact")
MEMORY_METHODS = ("whole", "exact", "monai", "monai-large")


def mac_config(normalization: str):  # noqa: ANN201 - imported lazily
    """The ``mac`` U-Net's architecture (``conf/mac``, :func:`_measure.mac_unet_config`) on the files' voxel size."""
    return _measure.mac_unet_config(normalization=normalization, spacing_zyx=SPACING_ZYX)


def make_model(normalization: str):  # noqa: ANN201 - torch is imported lazily
    """The mac U-Net with a non-zero correction, and its card."""
    import torch

    from fusemycell.models.card import card_for
    from fusemycell.models.model_file import TrainedModel
    from fusemycell.models.unet import UNet3D

    torch.manual_seed(0)
    config = mac_config(normalization)
    network = UNet3D(config).eval()
    torch.nn.init.normal_(network.head.weight, std=0.1)
    return TrainedModel(network, card_for(config, TODAY_TILE))


def measure_file(args: argparse.Namespace) -> dict:
    """One file-to-file prediction (``args.measure`` of :data:`FILE_METHODS`)."""
    from fusemycell.inference.apply import InferenceSettings, make_backend, predict_file
    from fusemycell.io.tiff import save_volume

    today = args.measure == "today"
    model = make_model("instance" if today else "none")
    if today:  # the old code's settings: no tiling choice yet
        settings = InferenceSettings(device="cpu", amp=False, tile_zyx=TODAY_TILE, batch_size=4)
    else:
        settings = InferenceSettings(device="cpu", amp=args.measure == "exact", tiling="exact")
    backend = make_backend(model, settings)
    baseline = peak_rss_kib()
    start = time.perf_counter()
    volume = predict_file(str(args.path), backend, settings, model.card)
    save_volume(args.out, volume)
    seconds = time.perf_counter() - start
    stream = volume.data
    while not hasattr(stream, "grid"):
        stream = stream.inner
    grid = stream.grid
    if hasattr(grid, "evaluations_per_voxel"):
        evaluations, tile = grid.evaluations_per_voxel(), grid.tile
    else:  # blended tiles: every tile's voxels over the volume's
        evaluations = len(grid) * float(np.prod(grid.tile)) / float(np.prod(grid.shape))
        tile = grid.tile
    precision = getattr(getattr(backend, "precision", None), "dtype", None)
    planned = None
    if hasattr(grid, "core"):  # exact tiling: the memory the planner counted (host buffers + the network)
        from fusemycell.inference.predictor import host_load, plan_bytes

        architecture = model.card.architecture
        load = host_load(stream.source, architecture, len(stream.flip_sets), backend)
        planned = plan_bytes(grid, load, backend, architecture.in_channels, settings.tile_settings)
    return {
        "planned_kib": planned / 1024 if planned is not None else None,
        "seconds": seconds,
        "baseline_kib": baseline,
        "peak_kib": peak_rss_kib(),
        "evaluations_per_voxel": evaluations,
        "tiles": len(grid),
        "tile": list(tile),
        "precision": str(precision).replace("torch.", "") if precision is not None else "float32",
    }


def measure_memory(args: argparse.Namespace) -> dict:
    """One in-memory prediction (``args.measure`` of :data:`MEMORY_METHODS`)."""
    import torch

    from fusemycell.inference.backends import TorchBackend
    from fusemycell.inference.predictor import predict_volume, read_all
    from fusemycell.inference.tiling import TileSettings

    model = make_model("none")
    volume = np.load(args.path)
    baseline = peak_rss_kib()
    start = time.perf_counter()
    extra: dict = {}
    if args.measure == "whole":
        with torch.inference_mode():
            prediction = model.network(torch.from_numpy(volume)[None, None]).numpy()[0, 0]
    elif args.measure == "exact":
        stream = predict_volume(
            volume, TorchBackend(model.network, "cpu", amp=False), model.config, TileSettings(), blend_tile=TODAY_TILE
        )
        prediction = read_all(stream)
        extra = {"evaluations_per_voxel": stream.grid.evaluations_per_voxel(), "tile": list(stream.grid.tile)}
    else:
        from monai.inferers import sliding_window_inference

        roi = TODAY_TILE if args.measure == "monai" else (32, 256, 256)
        with torch.inference_mode():
            prediction = sliding_window_inference(
                torch.from_numpy(volume)[None, None],
                roi_size=roi,
                sw_batch_size=4,
                predictor=model.network,
                overlap=0.5,
                mode="gaussian",
                sigma_scale=0.125,
                padding_mode="replicate",
            )[0, 0].numpy()
        extra = {"tile": list(roi)}
    seconds = time.perf_counter() - start
    np.save(args.out, prediction)
    return {"seconds": seconds, "baseline_kib": baseline, "peak_kib": peak_rss_kib(), **extra}


def child(method: str, path: Path, out: Path, code: Path | None = None) -> dict:
    """:func:`measure_file` or :func:`measure_memory` in a fresh interpreter (``code``: another revision's tree)."""
    arguments = ["--measure", method, "--path", str(path), "--prediction-out", str(out)]
    env = None
    if code is not None:
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(code / "src"), os.environ.get("PYTHONPATH")])),
        }
    return run_measurement(__file__, arguments, f"measurement {method}", timeout=CHILD_TIMEOUT_S, env=env)


def mib(kib: float) -> float:
    """KiB in MiB."""
    return float(kib) / 1024


def file_part(depths: list[int], workdir: Path, methods: tuple[str, ...] = FILE_METHODS) -> list[dict]:
    """Part 1: every method at every depth."""
    from fusemycell.io.tiff import write_volume

    rows = []
    for depth in depths:
        path = workdir / f"study_{depth}.tif"
        write_volume(path, PlaneSource(depth), SPACING_ZYX)
        for method in methods:
            if method != "exact" and depth != depths[0]:
                continue  # the deeper files show the default's memory in depth; today's would take hours
            print(f"  {depth} planes, {method}", file=sys.stderr, flush=True)
            code = _measure.revision_tree(TODAY_REVISION, workdir, ROOT) if method == "today" else None
            result = child(method, path, workdir / f"out_{method}.tif", code)
            (workdir / f"out_{method}.tif").unlink()
            rows.append({"depth": depth, "method": method, **result})
            print(f"    {result['seconds']:.0f} s", file=sys.stderr, flush=True)
        path.unlink()
    return rows


def memory_part(shape: tuple[int, int, int], workdir: Path, with_monai: bool) -> list[dict]:
    """Part 2: every method on one in-memory volume, compared with the whole-volume prediction."""
    path = workdir / "volume.npy"
    np.save(path, make_volume(shape))
    rows, reference = [], None
    for method in MEMORY_METHODS if with_monai else MEMORY_METHODS[:2]:
        print(f"  in memory {shape}, {method}", file=sys.stderr, flush=True)
        out = workdir / f"{method}.npy"
        result = child(method, path, out)
        prediction = np.load(out)
        out.unlink()
        if reference is None:
            reference = prediction
        result["max_diff_to_whole"] = float(np.abs(prediction - reference).max())
        result["output_range"] = float(np.ptp(reference))
        rows.append({"method": method, **result})
    return rows


PLAN_DEPTHS = (40, 80, 120, 300)
PLAN_MEMORY_GB = (1.0, 2.0, 4.0, 8.0)
#: The ``mac`` network's bytes per voxel read in bf16 for the computed plan table (the former model's value).
PLAN_NETWORK_BYTES_PER_VOXEL = 132


def plan_rows(depths: tuple[int, ...] = PLAN_DEPTHS, budgets: tuple[float, ...] = PLAN_MEMORY_GB) -> list[dict]:
    """What the planner chooses for the ``mac`` network in bf16 on 1920-wide files (computed, nothing run).

    The network's bytes per voxel are :data:`PLAN_NETWORK_BYTES_PER_VOXEL` here (a run measures its own:
    :func:`fusemycell.inference.predictor.plan_exact`), so the table shows the planner, not one machine."""
    from fusemycell.inference.tiling import TileSettings, exact_grid
    from fusemycell.models.receptive_field import halo

    config = mac_config("none")
    rows = []
    for memory_gb in budgets:
        for depth in depths:
            grid = exact_grid(
                (depth, 1920, 1920),
                halo=halo(config),
                multiple=config.size_multiple,
                settings=TileSettings(memory_gb=memory_gb),
                network_bytes_per_voxel=PLAN_NETWORK_BYTES_PER_VOXEL,
            )
            rows.append(
                {
                    "memory_gb": memory_gb,
                    "depth": depth,
                    "tile": list(grid.tile),
                    "core": list(grid.core),
                    "evaluations_per_voxel": grid.evaluations_per_voxel(),
                }
            )
    return rows


def report(results: dict) -> None:
    """Markdown tables."""
    print("### Exact tiling\n")
    if results.get("plans"):
        print("### Planned tiles (computed): `mac` network, bf16, planes 1920x1920\n")
        print("| inference.memory_gb | planes | tile read | core | evaluations / voxel |")
        print("|---:|---:|---|---|---:|")
        for r in results["plans"]:
            print(
                f"| {r['memory_gb']:g} | {r['depth']} | {'x'.join(map(str, r['tile']))} "
                f"| {'x'.join(map(str, r['core']))} | {r['evaluations_per_voxel']:.2f} |"
            )
        print()
    if results.get("file"):
        print("### File to file, planes 1920x1920 uint16, `mac` U-Net, CPU\n")
        print(
            "| planes | method | precision | tile read | tiles | evaluations / voxel | time (s) "
            f"| projected {STUDY_DEPTH} planes (min) | peak RSS over baseline (MiB) | planned (MiB) |"
        )
        print("|---:|---|---|---|---:|---:|---:|---:|---:|---:|")
        for r in results["file"]:
            projected = r["seconds"] * STUDY_DEPTH / r["depth"] / 60
            planned = f"{mib(r['planned_kib']):.0f}" if r.get("planned_kib") else "-"
            print(
                f"| {r['depth']} | {r['method']} | {r['precision']} | {'x'.join(map(str, r['tile']))} | {r['tiles']} "
                f"| {r['evaluations_per_voxel']:.2f} | {r['seconds']:.0f} | {projected:.1f} "
                f"| {mib(r['peak_kib'] - r['baseline_kib']):.0f} | {planned} |"
            )
        first = results["file"][0]["depth"]
        by = {r["method"]: r for r in results["file"] if r["depth"] == first}
        if "today" in by:
            for method in ("exact-fp32", "exact"):
                if method in by:
                    print(f"\n{method} is {by['today']['seconds'] / by[method]['seconds']:.1f}x faster than today.")
    if results.get("memory"):
        print(f"\n### In memory, {'x'.join(map(str, results['shape']))} float32, `none` network, float32\n")
        print("| method | tile | time (s) | peak RSS over baseline (MiB) | max abs difference to whole volume |")
        print("|---|---|---:|---:|---:|")
        for r in results["memory"]:
            tile = "x".join(map(str, r.get("tile", []))) or "whole"
            print(
                f"| {r['method']} | {tile} | {r['seconds']:.1f} | {mib(r['peak_kib'] - r['baseline_kib']):.0f} "
                f"| {r['max_diff_to_whole']:.1e} |"
            )
        print(f"\n(output range {results['memory'][0]['output_range']:.2f})")
    print(
        f"\nReferences: `today` is revision {TODAY_REVISION}'s own code (pinned); in memory, the whole volume in one "
        "call.\n"
    )
    harness.print_lines(harness.provenance(results))


def measure_child(args: argparse.Namespace) -> int | None:
    if not args.measure:
        return None
    args.out = Path(args.prediction_out)
    result = measure_file(args) if args.measure in FILE_METHODS and args.path.suffix == ".tif" else measure_memory(args)
    print(json.dumps(result))
    return 0


def run(args: argparse.Namespace) -> dict:
    """The planner's table, then the parts asked for."""
    results: dict = {"shape": args.shape, "plans": plan_rows()}
    with harness.scratch_folder(args.workdir, "exact_tiling_") as workdir:
        if not args.skip_memory:
            results["memory"] = memory_part(tuple(args.shape), workdir, not args.skip_monai)
        if not args.skip_file:
            results["file"] = file_part(args.depths, workdir, tuple(args.methods))
    return results


def main(argv: list[str] | None = None) -> int:
    """Parse, run the parts (result in ``benchmarks/results/``), print the tables."""
    parser = harness.parser(__doc__)
    parser.add_argument("--depths", type=int, nargs="+", default=[40, 80])
    parser.add_argument("--shape", type=int, nargs=3, default=[64, 512, 512])
    parser.add_argument(
        "--methods", nargs="+", choices=FILE_METHODS, default=list(FILE_METHODS), help="file part: methods to run"
    )
    parser.add_argument("--skip-file", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-monai", action="store_true")
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--prediction-out", type=Path, help=argparse.SUPPRESS)
    return harness.main(__file__, argv, parser, run, report, child=measure_child)


if __name__ == "__main__":
    sys.exit(main())
