"""Benchmark: the project's challenge SSIM versus the challenge's reference computation.

The script writes two uint16 ZYX volumes (``--shape``, default 128x1024x1024:
smooth blobs plus noise, and a degraded copy: dimmer, blurred along x, other
noise) as tiled BigTIFFs with :func:`fusemycell.io.tiff.write_volume`, from
objects that make planes on demand. Then, each in a fresh Python process:

``ours``
    ``ssim(read_volume(p, lazy=True).data, read_volume(t, lazy=True).data)``
    (:mod:`fusemycell.metrics.ssim`: exact percentiles from a histogram, then
    blocks with a halo on a thread pool; neither volume is ever held);
``reference``
    ``tifffile.imread`` of both, ``percentile_normalize`` of each in float64,
    ``skimage.metrics.structural_similarity(p, t, win_size=7,
    data_range=max(np.ptp(p), np.ptp(t)))``.

Peak memory is the process's ``VmHWM`` (``/proc/self/status``) with its value
after imports as the baseline (``ru_maxrss`` is not used: after fork + exec
Linux carries the parent's peak into it). The two SSIM values must agree to
``--tolerance`` (1e-6), otherwise the exit status is 1.

Usage::

    python benchmarks/ssim.py [--shape 128 1024 1024] [--workdir DIR] [--tolerance 1e-6]
    python benchmarks/ssim.py --report benchmarks/results/ssim-DATE.json
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

METHODS = ("ours", "reference")
SPACING_ZYX = (1.0, 0.39, 0.39)


class SyntheticVolume:
    """Array-like uint16 volume made plane by plane: blobs plus noise (``degraded``: dimmer, blurred, other noise)."""

    def __init__(self, shape: tuple[int, int, int], degraded: bool):
        self.shape = tuple(shape)
        self.dtype = np.dtype(np.uint16)
        self.ndim = 3
        self.degraded = degraded
        rng = np.random.default_rng(0)
        count = 40
        self._centres = rng.uniform(0, 1, (count, 3)) * np.array(shape)
        self._sigmas = rng.uniform(0.02, 0.08, (count, 3)) * np.array(shape)
        self._amplitudes = rng.uniform(500, 3000, count)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, z: int) -> np.ndarray:
        _, ny, nx = self.shape
        y = np.arange(ny, dtype=np.float32)
        x = np.arange(nx, dtype=np.float32)
        plane = np.full((ny, nx), 100.0, dtype=np.float32)
        for (cz, cy, cx), (sz, sy, sx), amplitude in zip(self._centres, self._sigmas, self._amplitudes):
            gz = np.exp(-0.5 * ((z - cz) / sz) ** 2)
            if gz < 1e-4:
                continue
            gy = np.exp(-0.5 * ((y - cy) / sy) ** 2)
            gx = np.exp(-0.5 * ((x - cx) / sx) ** 2)
            plane += np.float32(amplitude * gz) * np.outer(gy, gx)
        rng = np.random.default_rng(int(z) + (1_000_000 if self.degraded else 0))
        if self.degraded:
            plane = 0.7 * (plane + np.roll(plane, 2, axis=1) + np.roll(plane, -2, axis=1)) / 3 + 30
            plane += rng.normal(0, 80, plane.shape).astype(np.float32)
        else:
            plane += rng.normal(0, 20, plane.shape).astype(np.float32)
        return np.clip(plane, 0, 65535).astype(np.uint16)


# -- measurement (runs in a fresh child process) ------------------------------------------------


def percentile_normalize(image: np.ndarray, p_low: float = 2.0, p_high: float = 99.8) -> np.ndarray:
    """The challenge's normalisation as its evaluation script does it: NumPy's percentiles, no clipping."""
    low, high = np.percentile(image, p_low), np.percentile(image, p_high)
    return image if low == high else (image - low) / (high - low)


def measure(method: str, prediction_path: Path, target_path: Path) -> dict[str, object]:
    """Compute the SSIM of the two files with ``method``; return value, time and memory."""
    import skimage.metrics
    import tifffile

    from fusemycell.io.formats import read_volume
    from fusemycell.metrics.ssim import ssim

    baseline = peak_rss_kib()
    start = time.perf_counter()
    if method == "ours":
        prediction = read_volume(prediction_path, lazy=True).data
        target = read_volume(target_path, lazy=True).data
        value = ssim(prediction, target)
        prediction.close()
        target.close()
    elif method == "reference":
        p = percentile_normalize(tifffile.imread(prediction_path).astype(np.float64))
        t = percentile_normalize(tifffile.imread(target_path).astype(np.float64))
        value = skimage.metrics.structural_similarity(p, t, win_size=7, data_range=max(np.ptp(p), np.ptp(t)))
    else:
        raise ValueError(f"unknown method {method!r}, expected one of {METHODS}")
    seconds = time.perf_counter() - start
    return {"value": float(value), "seconds": seconds, "baseline_kib": baseline, "peak_kib": peak_rss_kib()}


def run_child(method: str, prediction_path: Path, target_path: Path) -> dict[str, object]:
    """Run :func:`measure` in a fresh interpreter (this script in ``--measure`` mode)."""
    arguments = ["--measure", method, "--prediction", str(prediction_path), "--target", str(target_path)]
    return run_measurement(__file__, arguments, f"measurement {method}")


# -- result and report --------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The command line (``--measure``, ``--prediction`` and ``--target`` are internal)."""
    parser = harness.parser(__doc__)
    parser.add_argument("--shape", type=int, nargs=3, default=[128, 1024, 1024], help="z y x (default 128 1024 1024)")
    parser.add_argument("--tolerance", type=float, default=1e-6, help="largest allowed |ours - reference| (1e-6)")
    parser.add_argument("--workdir", type=Path, default=None, help="folder for the files (default: a temp dir)")
    parser.add_argument("--measure", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--prediction", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--target", type=Path, help=argparse.SUPPRESS)
    return parser


def benchmark(args: argparse.Namespace, workdir: Path) -> dict:
    """Write both volumes, measure both methods: the result's rows and ratios."""
    from fusemycell.io.tiff import write_volume

    shape = tuple(args.shape)
    paths = {"prediction": workdir / "prediction.tif", "target": workdir / "target.tif"}
    start = time.perf_counter()
    write_volume(paths["target"], SyntheticVolume(shape, degraded=False), SPACING_ZYX)
    write_volume(paths["prediction"], SyntheticVolume(shape, degraded=True), SPACING_ZYX)
    print(f"  wrote two {shape} uint16 volumes in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    rows = []
    for method in METHODS:
        r = run_child(method, paths["prediction"], paths["target"])
        print(f"  {method}: {r['seconds']:.1f} s", file=sys.stderr)
        peak, baseline = int(r["peak_kib"]) / 1024, int(r["baseline_kib"]) / 1024
        rows.append(
            {
                "method": method,
                "ssim": float(r["value"]),
                "seconds": float(r["seconds"]),
                "peak_mib": round(peak, 1),
                "baseline_mib": round(baseline, 1),
            }
        )
    ours, reference = rows
    difference = abs(ours["ssim"] - reference["ssim"])
    above = [r["peak_mib"] - r["baseline_mib"] for r in rows]
    return {
        "shape_zyx": list(shape),
        "rows": rows,
        "difference": difference,
        "speedup": reference["seconds"] / ours["seconds"],
        "memory_ratio": above[0] / above[1],
        "failures": [f"SSIM differs by {difference:.2e}"] if difference >= args.tolerance else [],
    }


def report(results: dict) -> None:
    """The Markdown of a result: ours against the pinned reference (skimage on whole volumes)."""
    shape = results["shape_zyx"]
    volume_mib = np.prod(shape) * 2 / MIB
    print(f"### Challenge SSIM of two {'x'.join(map(str, shape))} uint16 volumes ({volume_mib:.0f} MiB each)\n")
    rows = [
        [
            r["method"],
            f"{r['ssim']:.9f}",
            f"{r['seconds']:.1f}",
            f"{r['peak_mib']:.0f}",
            f"{r['peak_mib'] - r['baseline_mib']:.0f}",
        ]
        for r in results["rows"]
    ]
    header = ["method", "SSIM", "time (s)", "peak RSS (MiB)", "above baseline (MiB)"]
    harness.print_lines(harness.table(header, rows))
    tolerance = results["parameters"]["tolerance"]
    print(
        f"\nOurs against the reference (`percentile_normalize` + skimage `structural_similarity` on whole volumes): "
        f"|difference| {results['difference']:.1e} (tolerance {tolerance:g}), "
        f"**{results['speedup']:.2f}x** faster, **{results['memory_ratio']:.3f}x** the memory above baseline. "
        "Peak RSS is VmHWM of a fresh measuring process; baseline is its VmHWM after imports.\n"
    )
    harness.print_lines(harness.provenance(results))


def measure_child(args: argparse.Namespace) -> int | None:
    if not args.measure:
        return None
    print(json.dumps(measure(args.measure, args.prediction, args.target)))
    return 0


def run(args: argparse.Namespace) -> dict:
    created = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="ssim_")) if created else args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        return benchmark(args, workdir)
    finally:
        if created:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            for name in ("prediction.tif", "target.tif"):
                (workdir / name).unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (result in ``benchmarks/results/``), or one measurement with ``--measure``."""
    return harness.main(__file__, argv, parse_args(), run, report, child=measure_child)


if __name__ == "__main__":
    sys.exit(main())
