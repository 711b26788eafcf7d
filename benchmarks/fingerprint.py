"""Benchmark: the fingerprint of a >= 1 GiB uint16 volume, slab by slab versus the whole volume.

The script writes, plane by plane and never holding it in memory, a uint16
ZYX volume like the raw challenge data (camera background about 100 with
noise, Gaussian blobs up to a few thousand counts), as the project's tiled
BigTIFF (:func:`fusemycell.io.tiff.write_volume`).

It then computes the fingerprint's statistics in two ways, each in a fresh
Python process so that the peak resident memory of one does not hide that of
the other:

``ours``
    :func:`fusemycell.preprocessing.fingerprint.scan_volume` (reads
    ``--slab-depth`` planes at a time; exact percentiles from a dense 16-bit
    histogram; mean profiles; maximum projections);
``naive``
    the reference: ``tifffile.imread`` of the whole volume, then
    ``np.percentile`` for (0.1, 2, 50, 99.8, 99.9), ``mean`` along two axes
    for the profiles along z, y and x, and ``max`` along each axis for the
    projections (block-max downsampled like the scan's).

Peak memory is the measuring process's ``VmHWM`` (peak resident set size of
its memory image), with its value right after imports as the baseline;
``ru_maxrss`` is reported beside it but is not used (a process started by
``fork``/``vfork`` + ``exec`` inherits the parent's peak in it).

It checks that the percentiles, minimum and maximum are equal to NumPy's, the
profiles and the mean close (``np.allclose``) and the projections equal, and
exits with status 1 if not; then it prints a Markdown table, the percentiles
side by side and a description of the machine.

With ``--cache cold`` the volume's pages are dropped from the OS page cache
(``posix_fadvise(DONTNEED)``) before each run; ``warm`` reads it first;
``both`` (the default) does both.

Usage::

    python benchmarks/fingerprint.py [--depth 150] [--slab-depth 16] [--workdir DIR] [--cache both]
        [--repeat 3] [--keep]
    python benchmarks/fingerprint.py --report benchmarks/results/fingerprint-DATE.json
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
import tifffile
from _measure import drop_from_page_cache, fsync_file, peak_rss_kib, read_through, ru_maxrss_kib, run_measurement

#: Voxel size (z, y, x) in micrometres written into the file.
SPACING_ZYX = (2.0, 0.65, 0.65)
#: Percentiles of the fingerprint (``fusemycell.preprocessing.fingerprint.FINGERPRINT_PERCENTILES``).
PERCENTILES = (0.1, 2.0, 50.0, 99.8, 99.9)
#: Longer side of the stored projections (``scan_volume``'s default ``projection_side``).
PROJECTION_SIDE = 256
METHODS = ("ours", "naive")


# -- synthetic volume ---------------------------------------------------------------------------
class SyntheticRawVolume:
    """A uint16 ZYX volume generated one z-plane at a time: camera background, noise and blobs.

    ``volume[z]`` returns plane ``z`` (the same on every call), which is all
    :func:`fusemycell.io.tiff.write_volume` needs to stream it to disk.

    Parameters
    ----------
    shape
        ``(z, y, x)`` size.
    blobs
        Number of Gaussian blobs (the specimen).
    seed
        Seed of the blob layout and of the noise.
    """

    background = 100.0
    noise_sd = 8.0

    def __init__(self, shape: tuple[int, int, int], blobs: int = 600, seed: int = 0):
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(np.uint16)
        self.seed = seed
        rng = np.random.default_rng(seed)
        depth, height, width = self.shape
        self.centres = rng.uniform((0, 0, 0), (depth, height, width), size=(blobs, 3))
        self.sigma_yx = rng.uniform(8.0, 40.0, size=blobs)
        self.sigma_z = np.maximum(self.sigma_yx * SPACING_ZYX[2] / SPACING_ZYX[0], 1.0)
        self.amplitude = rng.uniform(300.0, 3000.0, size=blobs)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, z: int) -> np.ndarray:
        """Return z-plane ``z`` as a uint16 ``(y, x)`` array."""
        z = int(z)
        _, height, width = self.shape
        rng = np.random.default_rng([self.seed, z])
        plane = rng.standard_normal((height, width), dtype=np.float32)
        plane *= np.float32(self.noise_sd)
        plane += np.float32(self.background)
        near = np.flatnonzero(np.abs(self.centres[:, 0] - z) <= 3 * self.sigma_z)
        for blob in near:
            cz, cy, cx = self.centres[blob]
            sigma = self.sigma_yx[blob]
            weight = self.amplitude[blob] * np.exp(-((z - cz) ** 2) / (2 * self.sigma_z[blob] ** 2))
            y0, y1 = max(0, int(cy - 3 * sigma)), min(height, int(cy + 3 * sigma) + 1)
            x0, x1 = max(0, int(cx - 3 * sigma)), min(width, int(cx + 3 * sigma) + 1)
            gy = np.exp(-((np.arange(y0, y1) - cy) ** 2) / (2 * sigma**2)).astype(np.float32)
            gx = np.exp(-((np.arange(x0, x1) - cx) ** 2) / (2 * sigma**2)).astype(np.float32)
            plane[y0:y1, x0:x1] += np.float32(weight) * np.outer(gy, gx)
        return np.clip(np.rint(plane), 0, 65535).astype(np.uint16)


# -- measurement (runs in a fresh child process) ------------------------------------------------


def block_max(image: np.ndarray, side: int = PROJECTION_SIDE) -> np.ndarray:
    """Downsample a 2D image by block maxima so that its longer side is at most ``side`` (float32)."""
    factor = max(1, int(np.ceil(max(image.shape) / side)))
    image = np.asarray(image, dtype=np.float32)
    if factor == 1:
        return image
    height, width = (-(-n // factor) * factor for n in image.shape)
    padded = np.full((height, width), -np.inf, dtype=np.float32)
    padded[: image.shape[0], : image.shape[1]] = image
    return padded.reshape(height // factor, factor, width // factor, factor).max(axis=(1, 3))


def percentile_key(q: float) -> str:
    """Key of percentile ``q`` in ``VolumeScan.percentiles`` (``0.1`` -> ``"0_1"``, ``2.0`` -> ``"2"``)."""
    return f"{q:g}".replace(".", "_")


def measure(method: str, path: Path, slab_depth: int, out: Path) -> dict[str, object]:
    """Compute the statistics of ``path`` with ``method`` and return time and memory.

    Meant to run in a process of its own: the peak RSS it reports is that of
    the whole process, with the baseline (after imports, before reading) given
    separately. The statistics go to ``out`` (``.json``) and the projections to
    ``out`` with suffix ``.npz``, for the parent to compare.

    Parameters
    ----------
    method
        ``"ours"`` (``scan_volume``) or ``"naive"`` (``tifffile.imread`` and NumPy).
    path
        The TIFF file.
    slab_depth
        Planes read at a time by ``scan_volume``.
    out
        Where to save the statistics.

    Returns
    -------
    dict
        ``seconds``, ``baseline_kib`` (peak RSS after imports), ``peak_kib``
        (peak RSS after computing), ``ru_maxrss_kib``.
    """
    # both methods import the same modules, so both baselines match
    from fusemycell.preprocessing.fingerprint import scan_volume

    baseline = peak_rss_kib()
    start = time.perf_counter()
    if method == "ours":
        scan = scan_volume(str(path), pair="image_0_nucleus", kind="angle", channel="nucleus", slab_depth=slab_depth)
        if scan.error:
            raise RuntimeError(scan.error)
        stats = {
            "percentiles": scan.percentiles,
            "minimum": scan.minimum,
            "maximum": scan.maximum,
            "mean": scan.mean,
            "profile_z": scan.profile_z,
            "profile_y": scan.profile_y,
            "profile_x": scan.profile_x,
        }
        projections = scan.projections
    elif method == "naive":
        volume = tifffile.imread(path)
        values = np.percentile(volume, PERCENTILES)
        stats = {
            "percentiles": {percentile_key(q): float(v) for q, v in zip(PERCENTILES, values)},
            "minimum": float(volume.min()),
            "maximum": float(volume.max()),
            "mean": float(volume.mean(dtype=np.float64)),
            "profile_z": volume.mean(axis=(1, 2)).tolist(),
            "profile_y": volume.mean(axis=(0, 2)).tolist(),
            "profile_x": volume.mean(axis=(0, 1)).tolist(),
        }
        projections = {name: block_max(volume.max(axis=axis)) for name, axis in (("yx", 0), ("zx", 1), ("zy", 2))}
    else:
        raise ValueError(f"unknown method {method!r}, expected one of {METHODS}")
    seconds = time.perf_counter() - start
    peak = peak_rss_kib()
    out.write_text(json.dumps(stats))
    np.savez(out.with_suffix(".npz"), **projections)
    return {"seconds": seconds, "baseline_kib": baseline, "peak_kib": peak, "ru_maxrss_kib": ru_maxrss_kib()}


def run_child(method: str, path: Path, slab_depth: int, out: Path) -> dict[str, object]:
    """Run :func:`measure` in a fresh interpreter (this script in ``--measure`` mode)."""
    arguments = ["--measure", method, "--path", str(path), "--slab-depth", str(slab_depth), "--stats-out", str(out)]
    return run_measurement(__file__, arguments, f"measurement {method} of {path}")


# -- checks -------------------------------------------------------------------------------------
def compare(ours: dict, naive: dict, ours_projections: dict, naive_projections: dict) -> list[str]:
    """Return the differences between the scan's statistics and NumPy's (empty when they agree).

    Percentiles, minimum, maximum and projections must be equal; the mean and
    the profiles close (``np.allclose``: they are sums of 5e8 values in two
    different orders).
    """
    failures = []
    for key in (percentile_key(q) for q in PERCENTILES):
        mine, theirs = ours["percentiles"].get(key), naive["percentiles"][key]
        if mine != theirs:
            failures.append(f"percentile {key}: scan {mine!r} != np.percentile {theirs!r}")
    for key in ("minimum", "maximum"):
        if ours[key] != naive[key]:
            failures.append(f"{key}: scan {ours[key]!r} != numpy {naive[key]!r}")
    if not np.isclose(ours["mean"], naive["mean"]):
        failures.append(f"mean: scan {ours['mean']!r} vs numpy {naive['mean']!r}")
    for axis in "zyx":
        key = f"profile_{axis}"
        if len(ours[key]) != len(naive[key]) or not np.allclose(ours[key], naive[key]):
            failures.append(f"{key} differs")
    for name, expected in naive_projections.items():
        if name not in ours_projections or not np.array_equal(ours_projections[name], expected):
            failures.append(f"projection {name} differs")
    return failures


def max_profile_difference(ours: dict, naive: dict) -> float:
    """Largest relative difference between the two methods' profiles."""
    worst = 0.0
    for axis in "zyx":
        a, b = np.asarray(ours[f"profile_{axis}"]), np.asarray(naive[f"profile_{axis}"])
        if a.shape == b.shape:
            worst = max(worst, float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-12))))
    return worst


# -- result and report --------------------------------------------------------------------------
def markdown_table(rows: list[dict[str, object]]) -> list[str]:
    """The measurement rows as a Markdown table, ``ours`` against ``naive`` with the same cache."""
    naive = {r["cache"]: r for r in rows if r["method"] == "naive"}
    lines = []
    for row in rows:
        lines.append([row["method"], row["cache"], *harness.against_reference(row, naive[row["cache"]], 3)])
    header = ["method", "cache", "time (s, median [IQR])", "time x naive", "RSS above baseline (MiB)", "memory x naive"]
    return harness.table(header, lines, "llrrrr")


def percentile_table(ours: dict, naive: dict) -> list[str]:
    """The percentiles of both methods side by side, as a Markdown table."""
    rows = []
    for q in PERCENTILES:
        key = percentile_key(q)
        mine, theirs = ours[key], naive[key]
        rows.append([f"{q:g}", repr(mine), repr(theirs), "yes" if mine == theirs else "**no**"])
    return harness.table(["percentile", "scan_volume", "np.percentile", "equal"], rows, "rrrl")


def report(results: dict) -> None:
    """The Markdown of a result; the reference is ``naive`` (``tifffile.imread`` + NumPy on the whole volume)."""
    p = results["parameters"]
    shape = results["shape_zyx"]
    volume_gib = np.prod(shape) * 2 / 1024**3
    print(
        f"### Fingerprint of a {'x'.join(map(str, shape))} uint16 volume ({volume_gib:.2f} GiB, tiled BigTIFF): "
        f"`scan_volume`, slab depth {p['slab_depth']}, against `tifffile.imread` + NumPy, "
        f"{p['repeat']} fresh processes each\n"
    )
    harness.print_lines(markdown_table(results["rows"]))
    print()
    harness.print_lines(percentile_table(results["percentiles"]["ours"], results["percentiles"]["naive"]))
    verdict = (
        "percentiles, minimum, maximum and projections equal, mean and profiles allclose"
        if not results["failures"]
        else "**FAILED**: " + "; ".join(results["failures"])
    )
    print(
        f"\nPeak RSS is VmHWM of the measuring process above its VmHWM after imports. Ours against NumPy: {verdict}; "
        f"largest relative difference between the profiles {results['profile_difference']:.1e}.\n"
    )
    harness.print_lines(harness.provenance(results))


# -- main ---------------------------------------------------------------------------------------
def parse_args() -> argparse.ArgumentParser:
    """The command line (``--measure`` and its options are internal)."""
    parser = harness.parser(__doc__)
    parser.add_argument("--depth", type=int, default=150, help="z-planes (default 150: 1.03 GiB uint16)")
    parser.add_argument("--plane", type=int, default=1920, help="y and x size of a plane (default 1920)")
    parser.add_argument("--slab-depth", type=int, default=16, help="planes read at a time by scan_volume")
    parser.add_argument("--workdir", type=Path, default=None, help="folder for the files (default: a temp dir)")
    parser.add_argument(
        "--cache", choices=("cold", "warm", "both"), default="both", help="page cache state before each run"
    )
    parser.add_argument("--repeat", type=int, default=3, help="fresh-process runs per method; time is the median")
    parser.add_argument("--keep", action="store_true", help="keep the written files")
    parser.add_argument("--measure", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--stats-out", type=Path, help=argparse.SUPPRESS)
    return parser


def measure_repeated(
    method: str, path: Path, cache: str, args: argparse.Namespace
) -> tuple[dict[str, object], dict, dict[str, np.ndarray]]:
    """Measure one method ``args.repeat`` times, each in a fresh process, with the page cache set up first.

    Returns
    -------
    tuple
        The row (median ``seconds``, the memory figures of the run with the
        highest peak), and the statistics and projections of the last run.
    """
    out = path.with_name(f"{path.stem}_{method}.json")
    results = []
    for _ in range(args.repeat):
        if cache == "cold":
            drop_from_page_cache(path)
        else:
            read_through(path)
        results.append(run_child(method, path, args.slab_depth, out))
    stats = json.loads(out.read_text())
    with np.load(out.with_suffix(".npz")) as archive:
        projections = {name: archive[name] for name in archive.files}
    out.unlink()
    out.with_suffix(".npz").unlink()
    worst = max(results, key=lambda result: result["peak_kib"])  # type: ignore[arg-type, return-value]
    seconds = harness.summary([float(r["seconds"]) for r in results])
    return {**worst, "seconds": seconds["median"], "seconds_iqr": seconds["iqr"]}, stats, projections


def benchmark(args: argparse.Namespace) -> dict:
    """Write the volume, measure both methods, compare them: the result's rows and failures."""
    from fusemycell.io.tiff import write_volume

    shape = (args.depth, args.plane, args.plane)
    path = args.workdir / "volume.tif"
    print(f"writing a {'x'.join(map(str, shape))} uint16 volume to {path}", file=sys.stderr)
    start = time.perf_counter()
    write_volume(path, SyntheticRawVolume(shape), SPACING_ZYX)
    fsync_file(path)
    print(f"  {time.perf_counter() - start:.1f} s", file=sys.stderr)

    caches = ("cold", "warm") if args.cache == "both" else (args.cache,)
    rows, failures = [], []
    for cache in caches:
        stats, projections = {}, {}
        for method in METHODS:
            row, stats[method], projections[method] = measure_repeated(method, path, cache, args)
            rows.append({"method": method, "cache": cache, **row})
            print(f"  {method} {cache}: {row['seconds']:.2f} s (median)", file=sys.stderr)
        failures += [
            f"{cache}: {f}" for f in compare(stats["ours"], stats["naive"], projections["ours"], projections["naive"])
        ]

    return {
        "shape_zyx": list(shape),
        "rows": rows,
        "percentiles": {
            m: {percentile_key(q): stats[m]["percentiles"][percentile_key(q)] for q in PERCENTILES} for m in METHODS
        },
        "profile_difference": max_profile_difference(stats["ours"], stats["naive"]),
        "failures": failures,
    }


def measure_child(args: argparse.Namespace) -> int | None:
    if not args.measure:
        return None
    print(json.dumps(measure(args.measure, args.path, args.slab_depth, args.stats_out)))
    return 0


def run(args: argparse.Namespace) -> dict:
    """Write the volume, measure both methods, remove the volume (unless ``--keep``)."""
    if min(args.depth, args.plane, args.slab_depth, args.repeat) <= 0:
        raise SystemExit("--depth, --plane, --slab-depth and --repeat must be positive")
    created = args.workdir is None
    if created:
        args.workdir = Path(tempfile.mkdtemp(prefix="fingerprint_"))
    else:
        args.workdir.mkdir(parents=True, exist_ok=True)
    try:
        return benchmark(args)
    finally:
        if not args.keep:
            if created:
                shutil.rmtree(args.workdir, ignore_errors=True)
            else:
                (args.workdir / "volume.tif").unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (result in ``benchmarks/results/``), or one measurement with ``--measure``."""
    return harness.main(__file__, argv, parse_args(), run, report, child=measure_child)


if __name__ == "__main__":
    sys.exit(main())
