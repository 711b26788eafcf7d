"""Benchmark: the project's sliding-window predictor versus MONAI's ``sliding_window_inference``.

Both run the same small 3D U-Net (``UNet3D``, depth 3, 8 base channels,
residual, weights drawn with ``torch.manual_seed(0)`` and ``normal_(std=0.05)``)
on CPU, overlap 0.5, 4 tiles per network call, Gaussian blending.

Part 1, in memory (one float32 volume, ``--shape``, tile ``--tile``):

``ours``
    ``predict_array(volume, TorchBackend(net, "cpu", amp=False), tile, overlap=0.5, batch_size=4)``;
``monai``
    ``sliding_window_inference(volume[None, None], tile, 4, net, overlap=0.5,
    mode="gaussian", sigma_scale=0.125, padding_mode="replicate")`` under
    ``torch.no_grad()`` (MONAI's own Gaussian importance map);
``monai-ourweights``
    the same call with ``roi_weight_map`` set to our tile's importance map, so
    only tile placement and arithmetic can differ.

The default shape, 48x256x256 with tile 16x64x64, is ``tile + k * tile / 2``
along every axis: there both place tiles at the same starts, and
``monai-ourweights`` must equal ours (max abs difference < ``--tolerance``,
exit status 1 otherwise). A second, smaller shape (``--uneven-shape``, not of
that form) shows what different tile placement does: we spread the starts so
the last tile is flush (nnU-Net), MONAI steps by ``tile / 2`` and clips the last.

Part 2, streaming from file to file: a uint16 volume of ``--stream-depth``
planes of 1920x1920 is written with ``write_volume`` from an object that makes
planes on demand (nothing holds the volume), then ``predict_file`` (exact
percentiles, normalisation, ``StreamingPrediction`` with tile 16x128x128,
mapping back to uint16) is written with ``save_volume``. On 2 CPU cores the
network needs about 0.1 to 0.3 s per 16x128x128 tile and a 1920x1920 row of
tiles is 841 tiles, so a 140-plane (1.0 GiB) volume takes about an hour:
``--stream-depth 140`` runs it; the default is smaller.

Every measurement runs in a fresh Python process. Peak memory is the process's
``VmHWM`` (``/proc/self/status``), with its value after imports, building the
network and loading the input as the baseline (``ru_maxrss`` is not used: after
fork + exec Linux carries the parent's peak into it).

MONAI is not a project dependency; install it into the environment for this
benchmark only: ``pip install --no-deps monai`` (it needs only torch and numpy).

Usage::

    python benchmarks/sliding_window.py [--shape 48 256 256] [--tile 16 64 64]
        [--uneven-shape 28 176 176] [--stream-depth 24] [--skip-stream] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import _measure
import numpy as np
from _measure import MIB, peak_rss_kib, run_measurement

#: Plane size of the challenge volumes (y, x), for the streaming part.
PLANE_SHAPE = (1920, 1920)
#: Voxel size (z, y, x) in micrometres written into the streamed file.
SPACING_ZYX = (1.0, 0.39, 0.39)
STREAM_TILE = (16, 128, 128)
OVERLAP = 0.5
BATCH = 4
METHODS = ("ours", "monai", "monai-ourweights", "stream")


# -- network and data ---------------------------------------------------------------------------
def make_network():  # noqa: ANN201 - torch is imported lazily
    """The U-Net both predictors run, with deterministic random weights."""
    import torch

    from fusemycell.models.config import UNetConfig
    from fusemycell.models.unet import UNet3D

    torch.manual_seed(0)
    net = UNet3D(UNetConfig(depth=3, base_channels=8, residual=True, residual_blur_sigma=0.5)).eval()
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.normal_(std=0.05)
    return net


def make_volume(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """A normalised float32 test volume: smooth blobs plus noise, roughly in [0, 1]."""
    rng = np.random.default_rng(seed)
    z, y, x = (np.arange(n, dtype=np.float32) for n in shape)
    volume = np.zeros(shape, dtype=np.float32)
    for _ in range(12):
        centre = rng.uniform(0, 1, 3) * np.array(shape)
        sigma = rng.uniform(0.05, 0.2, 3) * np.array(shape)
        gz, gy, gx = (np.exp(-0.5 * ((a - c) / s) ** 2) for a, c, s in zip((z, y, x), centre, sigma))
        volume += np.float32(rng.uniform(0.3, 1.0)) * gz[:, None, None] * gy[None, :, None] * gx[None, None, :]
    volume += rng.normal(0, 0.05, shape).astype(np.float32)
    return volume


class PlaneSource:
    """Array-like uint16 volume whose planes are made on demand (so nothing holds the volume)."""

    def __init__(self, depth: int, plane_shape: tuple[int, int] = PLANE_SHAPE):
        self.shape = (depth, *plane_shape)
        self.dtype = np.dtype(np.uint16)
        self.ndim = 3
        yy, xx = np.ogrid[: plane_shape[0], : plane_shape[1]]
        self._base = (
            1500 * np.exp(-(((yy - 700) / 300.0) ** 2 + ((xx - 900) / 400.0) ** 2))
            + 900 * np.exp(-(((yy - 1400) / 200.0) ** 2 + ((xx - 500) / 250.0) ** 2))
        ).astype(np.float32)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, z: int) -> np.ndarray:
        rng = np.random.default_rng(int(z))
        plane = self._base * np.float32(0.6 + 0.4 * np.sin(z / 7.0) ** 2) + 100
        plane += rng.normal(0, 30, self.shape[1:]).astype(np.float32)
        return np.clip(plane, 0, 65535).astype(np.uint16)


# -- measurement (runs in a fresh child process) ------------------------------------------------


def measure(args: argparse.Namespace) -> dict[str, object]:
    """Run one prediction (``args.measure``) and return its time and memory; the result goes to ``args.out``."""
    import torch

    from fusemycell.inference.predictor import TorchBackend, predict_array

    net = make_network()
    result: dict[str, object] = {"threads": torch.get_num_threads()}
    if args.measure == "stream":
        from fusemycell.inference.apply import InferenceSettings, predict_file
        from fusemycell.io.tiff import save_volume
        from fusemycell.models.card import card_for
        from fusemycell.models.checkpoint import TrainedModel

        model = TrainedModel(net, card_for(net.config, (16, 64, 64)))
        settings = InferenceSettings(device="cpu", amp=False, tile_zyx=STREAM_TILE, batch_size=BATCH)
        baseline = peak_rss_kib()
        start = time.perf_counter()
        volume = predict_file(str(args.path), TorchBackend(net, "cpu", False), settings, model.card)
        save_volume(args.out, volume)
        seconds = time.perf_counter() - start
        result["window_planes"] = volume.data.inner.peak_window_planes
        result["tiles"] = len(volume.data.inner.grid)
    else:
        volume = np.load(args.path)
        tile = tuple(args.tile)
        if args.measure == "ours":
            backend = TorchBackend(net, device="cpu", amp=False)
            baseline = peak_rss_kib()
            start = time.perf_counter()
            prediction = predict_array(volume, backend, tile, overlap=OVERLAP, batch_size=BATCH)
            seconds = time.perf_counter() - start
        else:
            from monai.inferers import sliding_window_inference

            from fusemycell.inference.tiling import TileGrid

            weights = None
            if args.measure == "monai-ourweights":
                weights = torch.from_numpy(TileGrid(volume.shape, tile, OVERLAP).tile_weights())
            baseline = peak_rss_kib()
            start = time.perf_counter()
            with torch.no_grad():
                output = sliding_window_inference(
                    torch.from_numpy(volume)[None, None],
                    roi_size=tile,
                    sw_batch_size=BATCH,
                    predictor=net,
                    overlap=OVERLAP,
                    mode="gaussian",
                    sigma_scale=0.125,
                    padding_mode="replicate",
                    roi_weight_map=weights,
                )
            prediction = output[0, 0].numpy()
            seconds = time.perf_counter() - start
        np.save(args.out, prediction)
    result.update({"seconds": seconds, "baseline_kib": baseline, "peak_kib": peak_rss_kib()})
    return result


def run_child(method: str, path: Path, out: Path, tile: tuple[int, ...]) -> dict[str, object]:
    """Run :func:`measure` in a fresh interpreter (this script in ``--measure`` mode)."""
    arguments = ["--measure", method, "--path", str(path), "--out", str(out), "--tile", *(str(t) for t in tile)]
    return run_measurement(__file__, arguments, f"measurement {method}")


# -- report -------------------------------------------------------------------------------------
def machine_description() -> list[str]:
    """Return lines describing the machine and the library versions."""
    import monai
    import torch

    return _measure.machine_description(
        f"numpy {np.__version__}, torch {torch.__version__}, monai {monai.__version__}",
        cpus=f"- CPUs: {os.cpu_count()} (torch threads {torch.get_num_threads()})",
    )


def mib(kib: object) -> str:
    """KiB as a MiB string."""
    return f"{float(kib) / 1024:.0f}"  # type: ignore[arg-type]


def monai_starts(size: int, tile: int) -> list[int]:
    """MONAI's tile starts along one axis: steps of ``tile * (1 - overlap)``, the last clipped to be flush."""
    if size <= tile:
        return [0]
    step = max(1, int(tile * (1 - OVERLAP)))
    count = -(-(size - tile) // step) + 1
    return [min(i * step, size - tile) for i in range(count)]


def compare(shape: tuple[int, int, int], tile: tuple[int, int, int], workdir: Path) -> tuple[list[str], dict]:
    """Measure the three in-memory predictors on one shape; return table rows and the differences."""
    from fusemycell.inference.tiling import TileGrid

    path = workdir / "volume.npy"
    np.save(path, make_volume(shape))
    rows, results, predictions = [], {}, {}
    for method in ("ours", "monai", "monai-ourweights"):
        out = workdir / f"{method}.npy"
        results[method] = run_child(method, path, out, tile)
        predictions[method] = np.load(out)
        out.unlink()
        r = results[method]
        print(f"  {shape} {method}: {r['seconds']:.1f} s", file=sys.stderr)
    path.unlink()
    grid = TileGrid(shape, tile, OVERLAP)
    same_starts = all(starts == monai_starts(n, t) for starts, n, t in zip(grid.starts, shape, grid.tile))
    diffs = {
        "monai": float(np.max(np.abs(predictions["ours"] - predictions["monai"]))),
        "monai-ourweights": float(np.max(np.abs(predictions["ours"] - predictions["monai-ourweights"]))),
        "same_starts": same_starts,
        "tiles": len(grid),
        "output_range": float(np.ptp(predictions["ours"])),
    }
    name = "x".join(map(str, shape))
    for method in ("ours", "monai", "monai-ourweights"):
        r = results[method]
        diff = "-" if method == "ours" else f"{diffs[method]:.1e}"
        rows.append(
            f"| {name} | {'same' if same_starts else 'different'} | {method} | {r['seconds']:.2f} "
            f"| {mib(r['peak_kib'])} | {mib(r['baseline_kib'])} | {mib(int(r['peak_kib']) - int(r['baseline_kib']))} "
            f"| {diff} |"
        )
    diffs["results"] = results
    return rows, diffs


def stream(depth: int, side: int, workdir: Path) -> tuple[dict[str, object], list[str]]:
    """Write a ``depth`` x 1920 x 1920 uint16 volume, predict it file to file; return the result and failures."""
    from fusemycell.io.tiff import read_volume, write_volume

    path, out = workdir / "stream_input.tif", workdir / "stream_output.tif"
    start = time.perf_counter()
    write_volume(path, PlaneSource(depth, (side, side)), SPACING_ZYX)
    print(f"  wrote {depth}x{side}x{side} uint16 in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    result = run_child("stream", path, out, STREAM_TILE)
    result["input_bytes"] = path.stat().st_size
    failures = []
    written = read_volume(out, lazy=True)
    try:
        if tuple(written.shape) != (depth, side, side) or written.dtype != np.uint16:
            failures.append(f"stream: output {written.shape} {written.dtype}, expected {(depth, side, side)} uint16")
        middle = written.data[depth // 2]
        if middle.min() == middle.max():
            failures.append("stream: the middle output plane is constant")
    finally:
        written.data.close()
    path.unlink()
    out.unlink()
    return result, failures


# -- main ---------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line (``--measure``, ``--path`` and ``--out`` are internal)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", type=int, nargs=3, default=[48, 256, 256], help="z y x (default 48 256 256)")
    parser.add_argument("--tile", type=int, nargs=3, default=[16, 64, 64], help="tile z y x (default 16 64 64)")
    parser.add_argument(
        "--uneven-shape", type=int, nargs=3, default=[28, 176, 176], help="shape where placements differ"
    )
    parser.add_argument("--tolerance", type=float, default=1e-4, help="max abs difference for 'same' (1e-4)")
    parser.add_argument("--stream-depth", type=int, default=24, help="planes of 1920x1920 streamed (default 24)")
    parser.add_argument("--stream-plane", type=int, default=PLANE_SHAPE[0], help="plane side (default 1920)")
    parser.add_argument("--skip-stream", action="store_true", help="only the in-memory comparison")
    parser.add_argument("--workdir", type=Path, default=None, help="folder for the files (default: a temp dir)")
    parser.add_argument("--measure", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def benchmark(args: argparse.Namespace, workdir: Path) -> int:
    """Run every measurement, print the report; return the exit status."""
    tile = tuple(args.tile)
    failures: list[str] = []
    header = (
        "| shape | tile starts | method | time (s) | peak RSS (MiB) | baseline (MiB) | above baseline (MiB) "
        "| max abs diff to ours |\n|---|---|---|---:|---:|---:|---:|---:|"
    )
    even_rows, even = compare(tuple(args.shape), tile, workdir)
    uneven_rows, uneven = compare(tuple(args.uneven_shape), tile, workdir)
    if even["same_starts"] and even["monai-ourweights"] > args.tolerance:
        failures.append(f"same tile starts, same weights: max abs difference {even['monai-ourweights']:.2e}")
    if not even["same_starts"]:
        failures.append(f"--shape {args.shape} is not tile + k * tile/2: tile starts differ")

    print(f"## Sliding window: ours vs MONAI, tile {'x'.join(map(str, tile))}, overlap 0.5, batch 4, CPU float32\n")
    print(header)
    print("\n".join(even_rows + uneven_rows))
    r = even["results"]
    time_ratio = r["ours"]["seconds"] / r["monai"]["seconds"]
    peak_ratio = r["ours"]["peak_kib"] / r["monai"]["peak_kib"]
    above = [int(r[m]["peak_kib"]) - int(r[m]["baseline_kib"]) for m in ("ours", "monai")]
    print(f"\nOurs / MONAI on {'x'.join(map(str, args.shape))} (MONAI's own Gaussian):\n")
    print(f"- time: {time_ratio:.2f} (target <= 1: {'met' if time_ratio <= 1 else 'not met'})")
    print(
        f"- peak RSS: {peak_ratio:.2f}; above baseline {above[0] / max(above[1], 1):.2f} "
        f"(target <= 0.5: {'met' if peak_ratio <= 0.5 else 'not met'})"
    )
    print(
        f"- max abs difference: {even['monai']:.2e} with MONAI's Gaussian, {even['monai-ourweights']:.2e} with "
        f"our importance map (output range {even['output_range']:.2f}, {even['tiles']} tiles)"
    )
    print(
        f"- uneven shape {'x'.join(map(str, args.uneven_shape))}: {uneven['monai']:.2e} with MONAI's Gaussian, "
        f"{uneven['monai-ourweights']:.2e} with our map (tile starts "
        f"{'same' if uneven['same_starts'] else 'different'})"
    )

    if not args.skip_stream:
        side = args.stream_plane
        result, stream_failures = stream(args.stream_depth, side, workdir)
        failures += stream_failures
        depth = args.stream_depth
        volume_mib = depth * side * side * 2 / MIB
        print(f"\n## Streaming file to file: {depth}x{side}x{side} uint16 ({volume_mib:.0f} MiB), tile 16x128x128\n")
        print(
            "| input file (MiB) | tiles | time (s) | s per tile | peak RSS (MiB) | baseline (MiB) "
            "| above baseline (MiB) | accumulation window (planes) |\n|---:|---:|---:|---:|---:|---:|---:|---:|"
        )
        print(
            f"| {result['input_bytes'] / MIB:.0f} | {result['tiles']} | {result['seconds']:.1f} "
            f"| {float(result['seconds']) / int(result['tiles']):.3f} | {mib(result['peak_kib'])} "
            f"| {mib(result['baseline_kib'])} | {mib(int(result['peak_kib']) - int(result['baseline_kib']))} "
            f"| {result['window_planes']} |"
        )
        plane_mib = side * side * 4 / MIB
        print(
            f"\nFor scale: the volume as float32 is {volume_mib * 2:.0f} MiB; one float32 plane {plane_mib:.1f} MiB, "
            f"a 16-plane float32 slab {16 * plane_mib:.0f} MiB."
        )

    print(
        "\nPeak RSS is VmHWM of the measuring process; baseline is its VmHWM after imports, the network and the input."
    )
    print("\nMachine:\n")
    print("\n".join(machine_description()))
    if failures:
        print("\nFAILED:\n" + "\n".join(f"- {failure}" for failure in failures))
        return 1
    print(f"\nSame tile starts and same weights: ours equals MONAI within {args.tolerance:g}.")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, or one measurement when called with ``--measure``."""
    args = parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args)))
        return 0
    created = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="sliding_window_")) if created else args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        return benchmark(args, workdir)
    finally:
        if created:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
