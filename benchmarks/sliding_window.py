"""Benchmark: the project's sliding-window predictor versus MONAI's ``sliding_window_inference``.

Both run the same small 3D U-Net (``UNet3D``, depth 3, 8 base channels,
residual, weights drawn with ``torch.manual_seed(0)`` and ``normal_(std=0.05)``)
on CPU, overlap 0.5, 4 tiles per network call, Gaussian blending.

Part 1, in memory (one float32 volume, ``--shape``, tile ``--tile``):

``ours``
    ``predict_array(volume, TorchBackend(net, "cpu", amp=False), TileSettings(tile, overlap=0.5, batch_size=4))``;
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

Part 2, streaming from file to file at full size (``--stream-depths 40 152``,
planes of 1920x1920; 152 planes is a 1.04 GiB uint16 file): a uint16 volume is
written with ``write_volume`` from an object that makes planes on demand
(nothing holds the volume), then

``stream`` (ours)
    ``predict_file`` (exact percentiles, normalisation, ``StreamingPrediction``
    with tile 16x128x128, background reader/writer, mapping back to uint16)
    written with ``save_volume``;
``monai-file``
    what a user of MONAI writes: ``tifffile.imread``, ``np.percentile`` (same
    percentiles), normalise to float32, ``sliding_window_inference`` on the
    whole volume (our importance map as ``roi_weight_map``, so the blending
    weights are the same), the same mapping to uint16, ``write_volume``.

The network of this part is deliberately cheap (``--stream-network cheap``: a
fixed 3x3x3 mean filter, ``AvgPool3d(3, stride=1, padding=1)``, about 5 ms per
16x128x128 tile here, against about 200 ms for the ``mac`` U-Net): what is under
test is the tiling's memory, not the network's. Its 3-voxel receptive field makes
tile borders differ from the interior, so tile placement and blending show in the
output. Depths of the form ``16 + k * 8`` and 1920 = ``128 + k * 64`` make both
place tiles alike; the two output files are compared plane by plane (uint16
levels; rounding of float32 sums that differ in the last bit can move a voxel
by one level). ``--stream-network unet`` uses the U-Net of part 1 instead
(about an hour for 152 planes on 2 cores).

Every measurement runs in a fresh Python process. Peak memory is the process's
``VmHWM`` (``/proc/self/status``), with its value after imports, building the
network and loading the input as the baseline (``ru_maxrss`` is not used: after
fork + exec Linux carries the parent's peak into it).

MONAI is not a project dependency; install it into the environment for this
benchmark only: ``pip install --no-deps monai`` (it needs only torch and numpy).

Usage::

    python benchmarks/sliding_window.py [--shape 48 256 256] [--tile 16 64 64]
        [--uneven-shape 28 176 176] [--stream-depths 40 152] [--stream-network cheap]
        [--skip-in-memory] [--skip-stream] [--workdir DIR]
    python benchmarks/sliding_window.py --report benchmarks/results/sliding-window-DATE.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import harness
import numpy as np
from _measure import MIB, peak_rss_kib, run_measurement

#: Plane size of the challenge volumes (y, x), for the streaming part.
PLANE_SHAPE = (1920, 1920)
#: Voxel size (z, y, x) in micrometres written into the streamed file.
SPACING_ZYX = (1.0, 0.39, 0.39)
STREAM_TILE = (16, 128, 128)
OVERLAP = 0.5
BATCH = 4
METHODS = ("ours", "monai", "monai-ourweights", "stream", "monai-file")
#: Percentiles of the normalisation (the project's defaults) in the streaming part.
PERCENTILES = (2.0, 99.8)
#: Longest a single measurement may run (seconds).
CHILD_TIMEOUT_S = 1800


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


class MeanFilter3d:
    """Factory of the cheap network of part 2: a fixed 3x3x3 mean filter (a ``torch.nn.Module``)."""

    @staticmethod
    def build():  # noqa: ANN205 - torch is imported lazily
        import torch

        return torch.nn.AvgPool3d(3, stride=1, padding=1, count_include_pad=False).eval()


def make_stream_network(kind: str):  # noqa: ANN201
    """The network of the streaming part: ``cheap`` (mean filter) or ``unet`` (part 1's U-Net)."""
    return MeanFilter3d.build() if kind == "cheap" else make_network()


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


def measure_stream(args: argparse.Namespace, result: dict[str, object]) -> tuple[int, float]:
    """Ours, file to file; return the baseline (KiB) and the seconds."""
    from fusemycell.inference.apply import InferenceSettings, predict_file
    from fusemycell.inference.backends import TorchBackend
    from fusemycell.io.tiff import save_volume
    from fusemycell.models.card import PreprocessingContract, card_for
    from fusemycell.models.config import UNetConfig
    from fusemycell.preprocessing.config import NormalizationParams

    net = make_stream_network(args.stream_network)
    settings = InferenceSettings(device="cpu", amp=False, tile_zyx=STREAM_TILE, batch_size=BATCH, tiling="blend")
    mapping = NormalizationParams(low_percentile=PERCENTILES[0], high_percentile=PERCENTILES[1])
    card = card_for(UNetConfig(), STREAM_TILE, preprocessing=PreprocessingContract(normalization=mapping))
    baseline = peak_rss_kib()
    start = time.perf_counter()
    volume = predict_file(str(args.path), TorchBackend(net, "cpu", False), settings, card)
    save_volume(args.out, volume)
    seconds = time.perf_counter() - start
    stream = volume.data.inner.inner  # BackgroundPlanes -> MappedToUint16 -> StreamingPrediction
    result["window_planes"] = stream.peak_window_planes
    result["tiles"] = len(stream.grid)
    return baseline, seconds


def measure_monai_file(args: argparse.Namespace, result: dict[str, object]) -> tuple[int, float]:
    """MONAI as a user calls it, file to file; return the baseline (KiB) and the seconds."""
    import tifffile
    import torch
    from monai.inferers import sliding_window_inference

    from fusemycell.inference.tiling import TileGrid
    from fusemycell.inference.transform import MappedToUint16, output_mapping
    from fusemycell.io.tiff import write_volume
    from fusemycell.normalization import NormalizationStats, normalize

    net = make_stream_network(args.stream_network)
    baseline = peak_rss_kib()
    start = time.perf_counter()
    raw = tifffile.imread(args.path)
    low, high = (float(v) for v in np.percentile(raw, PERCENTILES))
    stats = NormalizationStats(low=low, high=high, p_low=PERCENTILES[0], p_high=PERCENTILES[1])
    volume = normalize(raw, stats)
    del raw
    weights = torch.from_numpy(TileGrid(volume.shape, STREAM_TILE, OVERLAP).tile_weights())
    with torch.no_grad():
        output = sliding_window_inference(
            torch.from_numpy(volume)[None, None],
            roi_size=STREAM_TILE,
            sw_batch_size=BATCH,
            predictor=net,
            overlap=OVERLAP,
            mode="gaussian",
            sigma_scale=0.125,
            padding_mode="replicate",
            roi_weight_map=weights,
        )
    del volume
    prediction = output[0, 0].numpy()
    write_volume(args.out, MappedToUint16(prediction, *output_mapping(stats, 4096.0, str(args.path))), SPACING_ZYX)
    seconds = time.perf_counter() - start
    result["tiles"] = len(TileGrid(prediction.shape, STREAM_TILE, OVERLAP))
    return baseline, seconds


def measure(args: argparse.Namespace) -> dict[str, object]:
    """Run one prediction (``args.measure``) and return its time and memory; the result goes to ``args.out``."""
    import torch

    from fusemycell.inference.backends import TorchBackend
    from fusemycell.inference.predictor import predict_array
    from fusemycell.inference.tiling import TileSettings

    result: dict[str, object] = {"threads": torch.get_num_threads()}
    if args.measure == "stream":
        baseline, seconds = measure_stream(args, result)
    elif args.measure == "monai-file":
        baseline, seconds = measure_monai_file(args, result)
    else:
        net = make_network()
        volume = np.load(args.path)
        tile = tuple(args.tile)
        if args.measure == "ours":
            backend = TorchBackend(net, device="cpu", amp=False)
            baseline = peak_rss_kib()
            start = time.perf_counter()
            prediction = predict_array(volume, backend, TileSettings(tile_zyx=tile, overlap=OVERLAP, batch_size=BATCH))
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


def run_child(method: str, path: Path, out: Path, tile: tuple[int, ...], network: str = "cheap") -> dict[str, object]:
    """Run :func:`measure` in a fresh interpreter (this script in ``--measure`` mode)."""
    arguments = [
        "--measure",
        method,
        "--path",
        str(path),
        "--prediction-out",
        str(out),
        "--tile",
        *(str(t) for t in tile),
    ]
    arguments += ["--stream-network", network]
    return run_measurement(__file__, arguments, f"measurement {method}", timeout=CHILD_TIMEOUT_S)


# -- report -------------------------------------------------------------------------------------
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


def compare(shape: tuple[int, int, int], tile: tuple[int, int, int], workdir: Path) -> dict:
    """Measure the three in-memory predictors on one shape: their results and the differences."""
    from fusemycell.inference.tiling import TileGrid

    path = workdir / "volume.npy"
    np.save(path, make_volume(shape))
    results, predictions = {}, {}
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
    diffs["results"] = results
    diffs["shape"] = list(shape)
    return diffs


def memory_rows(diffs: dict) -> list[str]:
    """The table rows of one in-memory shape."""
    rows = []
    name = "x".join(map(str, diffs["shape"]))
    for method in ("ours", "monai", "monai-ourweights"):
        r = diffs["results"][method]
        diff = "-" if method == "ours" else f"{diffs[method]:.1e}"
        rows.append(
            f"| {name} | {'same' if diffs['same_starts'] else 'different'} | {method} | {r['seconds']:.2f} "
            f"| {mib(r['peak_kib'])} | {mib(r['baseline_kib'])} | {mib(int(r['peak_kib']) - int(r['baseline_kib']))} "
            f"| {diff} |"
        )
    return rows


def compare_files(first: Path, second: Path) -> tuple[int, int]:
    """Max abs difference (uint16 levels) and count of differing voxels, plane by plane."""
    from fusemycell.io.formats import read_volume

    a, b = read_volume(first, lazy=True).data, read_volume(second, lazy=True).data
    try:
        if a.shape != b.shape:
            raise ValueError(f"{first} is {a.shape}, {second} is {b.shape}")
        largest, differing = 0, 0
        for z in range(a.shape[0]):
            diff = np.abs(a[z].astype(np.int32) - b[z].astype(np.int32))
            largest, differing = max(largest, int(diff.max())), differing + int(np.count_nonzero(diff))
    finally:
        a.close()
        b.close()
    return largest, differing


def stream(
    depth: int, side: int, workdir: Path, network: str, with_monai: bool
) -> tuple[dict[str, dict[str, object]], list[str]]:
    """Write a ``depth`` x side x side uint16 volume, predict it file to file (ours, MONAI); results and failures."""
    from fusemycell.io.formats import read_volume
    from fusemycell.io.tiff import write_volume

    path = workdir / "stream_input.tif"
    start = time.perf_counter()
    write_volume(path, PlaneSource(depth, (side, side)), SPACING_ZYX)
    print(f"  wrote {depth}x{side}x{side} uint16 in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    results: dict[str, dict[str, object]] = {}
    failures = []
    outputs = {}
    for method in ("stream", "monai-file") if with_monai else ("stream",):
        outputs[method] = workdir / f"{method}_output.tif"
        results[method] = run_child(method, path, outputs[method], STREAM_TILE, network)
        results[method]["input_bytes"] = path.stat().st_size
        print(f"  {depth} planes, {method}: {results[method]['seconds']:.1f} s", file=sys.stderr)
    written = read_volume(outputs["stream"], lazy=True)
    try:
        if tuple(written.shape) != (depth, side, side) or written.dtype != np.uint16:
            failures.append(f"stream: output {written.shape} {written.dtype}, expected {(depth, side, side)} uint16")
        middle = written.data[depth // 2]
        if middle.min() == middle.max():
            failures.append("stream: the middle output plane is constant")
    finally:
        written.data.close()
    if with_monai:
        largest, differing = compare_files(outputs["stream"], outputs["monai-file"])
        results["monai-file"]["max_diff_levels"] = largest
        results["monai-file"]["differing_voxels"] = differing
        if largest > 1:
            failures.append(f"stream vs MONAI at {depth} planes: outputs differ by {largest} uint16 levels (> 1)")
    path.unlink()
    for out in outputs.values():
        out.unlink()
    return results, failures


def stream_part(args: argparse.Namespace, workdir: Path) -> tuple[dict, list[str]]:
    """Part 2 for every depth: the results by depth and the failures."""
    side, failures, by_depth = args.stream_plane, [], {}
    for depth in args.stream_depths:
        by_depth[depth], depth_failures = stream(depth, side, workdir, args.stream_network, not args.skip_monai_stream)
        failures += depth_failures
    return by_depth, failures


def stream_report(p: dict, by_depth: dict) -> None:
    """Part 2's table (``p``: the result's parameters)."""
    by_depth = {int(depth): results for depth, results in by_depth.items()}
    side = p["stream_plane"]
    network = "3x3x3 mean filter (cheap)" if p["stream_network"] == "cheap" else "U-Net depth 3 / 8 channels"
    print(
        f"\n### Streaming file to file, planes {side}x{side} uint16, tile 16x128x128, overlap 0.5, batch 4, "
        f"network: {network}\n"
    )
    print(
        "| depth | input file (GiB) | method | tiles | time (s) | ms per tile | peak RSS (MiB) | baseline (MiB) "
        "| above baseline (MiB) | accumulation window (planes) | max diff to ours (uint16 levels) "
        "| voxels differing |\n|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    for depth, results in by_depth.items():
        for method, r in results.items():
            name = "ours (`predict_file` + `save_volume`)" if method == "stream" else "MONAI (imread + in memory)"
            print(
                f"| {depth} | {int(r['input_bytes']) / 2**30:.2f} | {name} | {r['tiles']} | {r['seconds']:.1f} "
                f"| {1000 * float(r['seconds']) / int(r['tiles']):.1f} | {mib(r['peak_kib'])} "
                f"| {mib(r['baseline_kib'])} | {mib(int(r['peak_kib']) - int(r['baseline_kib']))} "
                f"| {r.get('window_planes', '-')} | {r.get('max_diff_levels', '-')} "
                f"| {r.get('differing_voxels', '-')} |"
            )
    print()
    for depth, results in by_depth.items():
        if "monai-file" in results:
            ours, monai = results["stream"], results["monai-file"]
            ratio = int(ours["peak_kib"]) / int(monai["peak_kib"])
            above = (int(ours["peak_kib"]) - int(ours["baseline_kib"])) / max(
                1, int(monai["peak_kib"]) - int(monai["baseline_kib"])
            )
            print(
                f"- {depth} planes: peak RSS ours / MONAI {ratio:.3f} (above baseline {above:.3f}; "
                f"target <= 0.25: {'met' if ratio <= 0.25 else 'not met'}); "
                f"time ours / MONAI {float(ours['seconds']) / float(monai['seconds']):.2f}"
            )
    if len(by_depth) >= 2:
        (d1, r1), (d2, r2) = list(by_depth.items())[0], list(by_depth.items())[-1]
        for method in r1:
            growth = (int(r2[method]["peak_kib"]) - int(r1[method]["peak_kib"])) / 1024
            print(
                f"- {method}: peak RSS {mib(r1[method]['peak_kib'])} MiB at {d1} planes, "
                f"{mib(r2[method]['peak_kib'])} MiB at {d2} planes ({growth:+.0f} MiB)"
            )
    plane_mib = side * side * 4 / MIB
    print(
        f"\nFor scale: one float32 plane is {plane_mib:.1f} MiB, a 16-plane float32 slab {16 * plane_mib:.0f} MiB; "
        f"the {max(by_depth)}-plane volume as float32 {max(by_depth) * plane_mib / 1024:.2f} GiB."
    )


# -- main ---------------------------------------------------------------------------------------
def parse_args() -> argparse.ArgumentParser:
    """The command line (``--measure``, ``--path`` and ``--prediction-out`` are internal)."""
    parser = harness.parser(__doc__)
    parser.add_argument("--shape", type=int, nargs=3, default=[48, 256, 256], help="z y x (default 48 256 256)")
    parser.add_argument("--tile", type=int, nargs=3, default=[16, 64, 64], help="tile z y x (default 16 64 64)")
    parser.add_argument(
        "--uneven-shape", type=int, nargs=3, default=[28, 176, 176], help="shape where placements differ"
    )
    parser.add_argument("--tolerance", type=float, default=1e-4, help="max abs difference for 'same' (1e-4)")
    parser.add_argument(
        "--stream-depths", type=int, nargs="+", default=[40, 152], help="depths streamed (default 40 152)"
    )
    parser.add_argument("--stream-network", choices=("cheap", "unet"), default="cheap", help="part 2's network")
    parser.add_argument("--skip-monai-stream", action="store_true", help="part 2 without MONAI")
    parser.add_argument("--skip-in-memory", action="store_true", help="only the streaming part")
    parser.add_argument("--stream-plane", type=int, default=PLANE_SHAPE[0], help="plane side (default 1920)")
    parser.add_argument("--skip-stream", action="store_true", help="only the in-memory comparison")
    parser.add_argument("--workdir", type=Path, default=None, help="folder for the files (default: a temp dir)")
    parser.add_argument("--measure", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--prediction-out", type=Path, help=argparse.SUPPRESS)
    return parser


def in_memory_part(args: argparse.Namespace, workdir: Path) -> tuple[dict, list[str]]:
    """Part 1: the even and the uneven shape; the failures."""
    tile = tuple(args.tile)
    failures: list[str] = []
    even = compare(tuple(args.shape), tile, workdir)
    uneven = compare(tuple(args.uneven_shape), tile, workdir)
    if even["same_starts"] and even["monai-ourweights"] > args.tolerance:
        failures.append(f"same tile starts, same weights: max abs difference {even['monai-ourweights']:.2e}")
    if not even["same_starts"]:
        failures.append(f"--shape {args.shape} is not tile + k * tile/2: tile starts differ")
    return {"even": even, "uneven": uneven}, failures


def in_memory_report(p: dict, part: dict) -> None:
    """Part 1's table: ours against MONAI's ``sliding_window_inference`` (the reference)."""
    even, uneven = part["even"], part["uneven"]
    tile = p["tile"]
    print(f"### Sliding window: ours vs MONAI, tile {'x'.join(map(str, tile))}, overlap 0.5, batch 4, CPU float32\n")
    print(
        "| shape | tile starts | method | time (s) | peak RSS (MiB) | baseline (MiB) | above baseline (MiB) "
        "| max abs diff to ours |\n|---|---|---|---:|---:|---:|---:|---:|"
    )
    print("\n".join(memory_rows(even) + memory_rows(uneven)))
    r = even["results"]
    time_ratio = r["ours"]["seconds"] / r["monai"]["seconds"]
    peak_ratio = r["ours"]["peak_kib"] / r["monai"]["peak_kib"]
    above = [int(r[m]["peak_kib"]) - int(r[m]["baseline_kib"]) for m in ("ours", "monai")]
    print(f"\nOurs / MONAI on {'x'.join(map(str, p['shape']))} (MONAI's own Gaussian):\n")
    print(f"- time: {time_ratio:.2f}")
    print(f"- peak RSS: {peak_ratio:.2f}; above baseline {above[0] / max(above[1], 1):.2f}")
    print(
        f"- max abs difference: {even['monai']:.2e} with MONAI's Gaussian, {even['monai-ourweights']:.2e} with "
        f"our importance map (output range {even['output_range']:.2f}, {even['tiles']} tiles)"
    )
    print(
        f"- uneven shape {'x'.join(map(str, p['uneven_shape']))}: {uneven['monai']:.2e} with MONAI's Gaussian, "
        f"{uneven['monai-ourweights']:.2e} with our map (tile starts "
        f"{'same' if uneven['same_starts'] else 'different'})"
    )


def run(args: argparse.Namespace) -> dict:
    """Run every part asked for: the result."""
    created = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="sliding_window_")) if created else args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    results: dict = {"failures": []}
    try:
        if not args.skip_in_memory:
            results["in_memory"], failures = in_memory_part(args, workdir)
            results["failures"] += failures
        if not args.skip_stream:
            results["stream"], failures = stream_part(args, workdir)
            results["failures"] += failures
    finally:
        if created:
            shutil.rmtree(workdir, ignore_errors=True)
    return results


def report(results: dict) -> None:
    """The Markdown of a result."""
    p = results["parameters"]
    if results.get("in_memory"):
        in_memory_report(p, results["in_memory"])
    if results.get("stream"):
        stream_report(p, results["stream"])
    print(
        "\nPeak RSS is VmHWM of the measuring process; baseline is its VmHWM after imports, the network and the input."
    )
    if results["failures"]:
        print("\nFAILED:\n" + "\n".join(f"- {failure}" for failure in results["failures"]))
    elif results.get("in_memory"):
        print(f"\nSame tile starts and same weights: ours equals MONAI within {p['tolerance']:g}.")
    print()
    harness.print_lines(harness.provenance(results))


def measure_child(args: argparse.Namespace) -> int | None:
    if not args.measure:
        return None
    args.out = args.prediction_out
    print(json.dumps(measure(args)))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (result in ``benchmarks/results/``), or one measurement with ``--measure``."""
    return harness.main(__file__, argv, parse_args(), run, report, child=measure_child)


if __name__ == "__main__":
    sys.exit(main())
