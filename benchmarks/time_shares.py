"""Benchmark: where the time of one file-to-file prediction goes, with and without the background reader/writer.

One uint16 file (``--shape``, default 32x384x384, tiled BigTIFF) is predicted
with the ``mac`` model (``--model``, default ``data/06_models/fusemycell_unet.pt``;
tile = the training patch doubled in y and x, overlap 0.5, batch 4, CPU
float32), exactly as the inference pipeline does: ``predict_file`` +
``save_volume``. Each run is a fresh process; the runs alternate
``--repeat`` times between ``background_io: false`` (everything in one thread)
and ``background_io: true`` (the next slab is read and normalised, and planes are
computed ahead of the writer, in background threads).

In each run the project's functions are wrapped (in the child only; the
project's code is unchanged) and their time is summed per thread, exclusively
(a phase's time excludes the phases it calls):

``read``
    ``LazyVolume.__getitem__`` (the percentile pass and the slabs);
``percentiles``
    ``scan_input`` (the exact 16-bit histogram of that pass);
``normalise``
    ``PreprocessedVolume.__getitem__`` (uint16 -> float32 on the network's scale);
``predict``
    the backend's call (``TorchBackend``: the network on a batch of tiles);
``blend``
    ``StreamingPrediction`` outside the network and the slab read: cutting tiles,
    weighting, adding into the accumulation window, dividing finished planes;
``map to uint16``
    ``MappedToUint16.__getitem__``;
``write``
    ``write_volume`` itself: cutting 128x128 TIFF tiles, tifffile's encoding and the disk;
``wait``
    the writer waiting for planes computed in the background (``BackgroundPlanes``).

``--network cheap`` replaces the network by a 3x3x3 mean filter (a few ms per
tile): a stand-in for a GPU, where the network no longer hides the disk.

The Markdown report goes to stdout: per mode the wall time (median), and per
phase its seconds and share of the wall time, per thread.

Usage::

    python benchmarks/time_shares.py [--shape 32 384 384] [--repeat 1] [--model PATH] [--network model|cheap]
    python benchmarks/time_shares.py --report benchmarks/results/time-shares-DATE.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import harness
import numpy as np
from _measure import peak_rss_kib, run_measurement

PHASES = ("read", "percentiles", "normalise", "predict", "blend", "map to uint16", "write", "wait")
SPACING_ZYX = (2.0, 0.39, 0.39)


class PhaseClock:
    """Exclusive time per (thread, phase): a per-thread stack of the phases entered."""

    def __init__(self) -> None:
        self.totals: dict[tuple[str, str], float] = defaultdict(float)
        self._local = threading.local()
        self._lock = threading.Lock()

    def wrap(self, phase: str, function):  # noqa: ANN001, ANN201
        """``function`` timed as ``phase``."""
        clock = self

        def timed(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            stack = clock._local.__dict__.setdefault("stack", [])
            frame = [0.0]  # time spent in nested phases
            stack.append(frame)
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - start
                stack.pop()
                if stack:
                    stack[-1][0] += elapsed
                thread = _thread_label()
                with clock._lock:
                    clock.totals[(thread, phase)] += elapsed - frame[0]

        return timed


def _thread_label() -> str:
    """``main``, ``reader`` (the slab read ahead) or ``planes`` (planes computed ahead of the writer)."""
    current = threading.current_thread()
    if current is threading.main_thread():
        return "main"
    return "reader" if "reading" in current.name else "planes"


def make_input(path: Path, shape: tuple[int, int, int]) -> None:
    """A uint16 volume of blurred blobs and noise (the statistics of a light-sheet view, roughly)."""
    from scipy.ndimage import gaussian_filter

    from fusemycell.io.tiff import write_volume

    rng = np.random.default_rng(0)
    volume = np.zeros(shape, np.float32)
    points = [rng.integers(0, n, 400) for n in shape]
    volume[tuple(points)] = 1
    volume = gaussian_filter(volume, (1.5, 4, 4)) * 4e4
    volume += rng.normal(120, 20, shape)
    write_volume(path, np.clip(volume, 0, 65535).astype(np.uint16), SPACING_ZYX)


def measure(args: argparse.Namespace) -> dict[str, object]:
    """One prediction (in the child), timed by phase."""
    import torch

    from fusemycell.inference import apply, backends, background, streams, transform
    from fusemycell.io import tiff
    from fusemycell.models.model_file import load_model
    from fusemycell.preprocessing import volumes

    clock = PhaseClock()
    tiff.LazyVolume.__getitem__ = clock.wrap("read", tiff.LazyVolume.__getitem__)
    apply.scan_input = clock.wrap("percentiles", apply.scan_input)
    volumes.PreprocessedVolume.__getitem__ = clock.wrap("normalise", volumes.PreprocessedVolume.__getitem__)
    streams.StreamingPrediction._process_row = clock.wrap("blend", streams.StreamingPrediction._process_row)
    streams.StreamingPrediction._plane = clock.wrap("blend", streams.StreamingPrediction._plane)
    transform.MappedToUint16.__getitem__ = clock.wrap("map to uint16", transform.MappedToUint16.__getitem__)
    background.BackgroundPlanes.__getitem__ = clock.wrap("wait", background.BackgroundPlanes.__getitem__)
    tiff.write_volume = clock.wrap("write", tiff.write_volume)

    model = load_model(args.model)
    if args.network == "cheap":  # a stand-in for a fast (GPU) network: the disk and the CPU-side work show
        model.network = torch.nn.AvgPool3d(3, stride=1, padding=1, count_include_pad=False)
    settings = apply.InferenceSettings(device="cpu", amp=False, background_io=args.background, tiling="blend")
    backend = backends.TorchBackend(model.network, "cpu", amp=False)
    backend_call = clock.wrap("predict", backend.__call__)
    baseline = peak_rss_kib()
    start = time.perf_counter()
    volume = apply.predict_file(str(args.path), backend_call, settings, model.card)
    tiff.save_volume(args.output, volume)
    wall = time.perf_counter() - start
    stream = volume.data
    while not hasattr(stream, "grid"):  # the wrappers (background planes, uint16 mapping, resampling) hold it
        stream = stream.inner
    return {
        "wall": wall,
        "tiles": len(stream.grid),
        "tile": list(stream.grid.tile),
        "threads": torch.get_num_threads(),
        "phases": {f"{thread}/{phase}": seconds for (thread, phase), seconds in clock.totals.items()},
        "baseline_kib": baseline,
        "peak_kib": peak_rss_kib(),
    }


def report(stored: dict) -> None:
    """The Markdown of a result; the reference mode is ``sequential`` (``background_io: false``)."""
    results = {False: stored["runs"]["sequential"], True: stored["runs"]["background"]}
    shape = stored["parameters"]["shape"]
    model = stored["network"]
    first = results[False][0]
    tile = "x".join(map(str, first["tile"]))
    name = "x".join(map(str, shape))
    print(f"### Where the time goes: {name} uint16 file to file, network {model}, tile {tile}, overlap 0.5, batch 4\n")
    print(
        f"Model: `{model}`; {first['tiles']} tiles; torch threads {first['threads']}; runs per mode: "
        f"{len(results[False])} (median wall time; phases of the median run).\n"
    )
    walls = {mode: statistics.median(r["wall"] for r in runs) for mode, runs in results.items()}
    print("| phase | thread | sequential: s | sequential: share of wall | background: s | background: share of wall |")
    print("|---|---|---:|---:|---:|---:|")
    picked = {mode: min(runs, key=lambda r: abs(r["wall"] - walls[mode])) for mode, runs in results.items()}
    keys = sorted(
        {key for r in picked.values() for key in r["phases"]},
        key=lambda k: (("main", "planes", "reader").index(k.split("/")[0]), PHASES.index(k.split("/")[1])),
    )
    for key in keys:
        thread, phase = key.split("/")
        cells = []
        for mode in (False, True):
            seconds = picked[mode]["phases"].get(key)
            cells += (
                ["-", "-"] if seconds is None else [f"{seconds:.1f}", f"{100 * seconds / picked[mode]['wall']:.1f} %"]
            )
        print(f"| {phase} | {thread} | {' | '.join(cells)} |")
    for mode in (False, True):
        main = sum(v for k, v in picked[mode]["phases"].items() if k.startswith("main/"))
        picked[mode]["other"] = picked[mode]["wall"] - main
    print(
        f"| other (main thread, outside every phase) | main | {picked[False]['other']:.1f} "
        f"| {100 * picked[False]['other'] / picked[False]['wall']:.1f} % | {picked[True]['other']:.1f} "
        f"| {100 * picked[True]['other'] / picked[True]['wall']:.1f} % |"
    )
    print(f"| **wall time** | | **{walls[False]:.1f}** | 100 % | **{walls[True]:.1f}** | 100 % |")
    print(
        "\nWall times of every run (s): "
        + "; ".join(
            f"{'background' if mode else 'sequential'} " + ", ".join(f"{r['wall']:.1f}" for r in runs)
            for mode, runs in results.items()
        )
    )
    print(f"\nBackground / sequential wall time: {walls[True] / walls[False]:.3f}")
    peaks = {mode: max(int(r["peak_kib"]) for r in runs) / 1024 for mode, runs in results.items()}
    print(f"Peak RSS: sequential {peaks[False]:.0f} MiB, background {peaks[True]:.0f} MiB.")
    print(f"Outputs with and without the background threads: {'identical' if stored['same'] else 'DIFFERENT'}.\n")
    harness.print_lines(harness.provenance(stored))


def parse_args() -> argparse.ArgumentParser:
    """The command line (``--measure``, ``--path``, ``--output``, ``--background`` are internal)."""
    parser = harness.parser(__doc__)
    parser.add_argument("--shape", type=int, nargs=3, default=[32, 384, 384], help="z y x (default 32 384 384)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per mode, alternating (default 1)")
    parser.add_argument("--model", default="data/06_models/fusemycell_unet.pt", help="trained model (mac)")
    parser.add_argument(
        "--network",
        choices=("model", "cheap"),
        default="model",
        help="the model's network, or a 3x3x3 mean filter standing in for a fast GPU (default model)",
    )
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--background", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, help=argparse.SUPPRESS)
    return parser


def measure_child(args: argparse.Namespace) -> int | None:
    if not args.measure:
        return None
    print(json.dumps(measure(args)))
    return 0


def run(args: argparse.Namespace) -> dict:
    """Alternate the two modes ``--repeat`` times, each run in a fresh process; compare their outputs."""
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="time_shares_"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        path = workdir / "input.tif"
        make_input(path, tuple(args.shape))
        results: dict[bool, list[dict]] = {False: [], True: []}
        outputs = {}
        for _ in range(args.repeat):
            for mode in (False, True):
                outputs[mode] = workdir / f"output_{mode}.tif"
                arguments = ["--measure", "--path", str(path), "--output", str(outputs[mode]), "--model", args.model]
                arguments += ["--network", args.network]
                result = run_measurement(__file__, arguments + (["--background"] if mode else []), "measurement")
                results[mode].append(result)
                print(f"  background={mode}: {result['wall']:.1f} s", file=sys.stderr)
        from fusemycell.io.formats import read_volume

        same = bool(np.array_equal(read_volume(outputs[False]).data, read_volume(outputs[True]).data))
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    return {
        "network": args.model if args.network == "model" else "3x3x3 mean filter (cheap)",
        "runs": {"sequential": results[False], "background": results[True]},
        "same": same,
        "failures": [] if same else ["outputs with and without the background threads differ"],
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (result in ``benchmarks/results/``), or one measurement with ``--measure``."""
    return harness.main(__file__, argv, parse_args(), run, report, child=measure_child)


if __name__ == "__main__":
    sys.exit(main())
