"""Benchmark: cutting training patches from a >= 1 GiB volume pair, lazily versus whole volumes.

The script writes, plane by plane and never holding a volume in memory, a pair
of float32 ZYX volumes like the preprocessing pipeline writes them (normalised
intensities: background about 0, specimen up to about 1; tiled BigTIFF by
:func:`fusemycell.io.tiff.write_volume`): ``fused.tif`` (smooth blobs plus
noise) and ``angle.tif`` (the same blobs attenuated along x, other noise).

It then cuts the same patches in two ways, each in a fresh Python process so
that the peak resident memory of one does not hide that of the other:

``ours``
    the project's code path: ``read_volume(fused, lazy=True)``,
    :func:`fusemycell.patching.sampling.foreground_grid` (block maxima read
    ``--slab-depth`` planes at a time), :func:`~fusemycell.patching.sampling.sample_origins`,
    then :meth:`fusemycell.patching.extract.PatchPlan.write` (reads each
    patch's box from both volumes, writes the store one patch at a time);
``naive``
    the reference: ``tifffile.imread`` of both volumes, the same block-max
    grid by a NumPy reshape of the whole fused array, the same origins (same
    functions, same seed), patches cut by slicing, ``np.save`` of the stacks.

Each method is timed in two phases: *sampling* (reading the fused volume and
finding the foreground grid and the origins) and *extraction* (cutting and
writing the patches). Peak memory is the measuring process's ``VmHWM`` (peak
resident set size of its memory image), with its value right after imports as
the baseline; ``ru_maxrss`` is reported beside it but is not used (a process
started by ``fork``/``vfork`` + ``exec`` inherits the parent's peak in it).

It checks that both stores hold the same origins and identical patches
(``PatchStore(ours)[i]`` against the naive patches cast to float16 and back)
and exits with status 1 if not, then prints a Markdown table, the ratio of the
peak memories (target: ours at most a quarter of naive) and a description of
the machine.

With ``--cache cold`` the volumes' pages are dropped from the OS page cache
(``posix_fadvise(DONTNEED)``) before each run; ``warm`` reads them first;
``both`` (the default) does both.

Usage::

    python benchmarks/patching.py [--depth 80] [--count 256] [--threshold 0.2] [--workdir DIR]
        [--cache both] [--repeat 3] [--keep]
    python benchmarks/patching.py --report benchmarks/results/patching-DATE.json
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
from _measure import (
    MIB,
    drop_from_page_cache,
    fsync_file,
    peak_rss_kib,
    read_through,
    reset_peak_rss,
    ru_maxrss_kib,
    run_measurement,
)

#: Voxel size (z, y, x) in micrometres written into the files.
SPACING_ZYX = (2.0, 0.65, 0.65)
METHODS = ("ours", "naive")
VOLUMES = ("angle", "fused")


# -- synthetic volume ---------------------------------------------------------------------------
class SyntheticVolume:
    """A float32 ZYX volume generated one z-plane at a time: Gaussian blobs plus noise.

    ``volume[z]`` returns plane ``z`` (the same on every call), which is all
    :func:`fusemycell.io.tiff.write_volume` needs to stream it to disk.

    Parameters
    ----------
    kind
        ``"fused"`` (blobs as they are) or ``"angle"`` (blobs attenuated along x,
        as a single view lit from one side, and other noise).
    shape
        ``(z, y, x)`` size.
    blobs
        Number of blobs.
    seed
        Seed of the blob layout (shared by both kinds) and of the noise.
    """

    noise_sd = 0.03

    def __init__(self, kind: str, shape: tuple[int, int, int], blobs: int = 400, seed: int = 0):
        if kind not in VOLUMES:
            raise ValueError(f"kind must be one of {VOLUMES}, got {kind!r}")
        self.kind = kind
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(np.float32)
        self.seed = seed
        rng = np.random.default_rng(seed)
        depth, height, width = self.shape
        self.centres = rng.uniform((0, 0, 0), (depth, height, width), size=(blobs, 3))
        self.sigma_yx = rng.uniform(8.0, 40.0, size=blobs)
        # z voxels are ~3x longer than y/x voxels: blobs are round in micrometres
        self.sigma_z = np.maximum(self.sigma_yx * SPACING_ZYX[2] / SPACING_ZYX[0], 1.0)
        self.amplitude = rng.uniform(0.4, 1.0, size=blobs).astype(np.float32)
        x = np.arange(width, dtype=np.float32)
        self.attenuation = np.exp(-x / width) if kind == "angle" else np.ones(width, dtype=np.float32)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, z: int) -> np.ndarray:
        """Return z-plane ``z`` as a float32 ``(y, x)`` array."""
        z = int(z)
        _, height, width = self.shape
        rng = np.random.default_rng([self.seed, VOLUMES.index(self.kind), z])
        plane = rng.standard_normal((height, width), dtype=np.float32)
        plane *= np.float32(self.noise_sd)
        near = np.flatnonzero(np.abs(self.centres[:, 0] - z) <= 3 * self.sigma_z)
        for blob in near:
            cz, cy, cx = self.centres[blob]
            sigma = self.sigma_yx[blob]
            weight = self.amplitude[blob] * np.exp(-((z - cz) ** 2) / (2 * self.sigma_z[blob] ** 2))
            y0, y1 = max(0, int(cy - 3 * sigma)), min(height, int(cy + 3 * sigma) + 1)
            x0, x1 = max(0, int(cx - 3 * sigma)), min(width, int(cx + 3 * sigma) + 1)
            gy = np.exp(-((np.arange(y0, y1) - cy) ** 2) / (2 * sigma**2)).astype(np.float32)
            gx = np.exp(-((np.arange(x0, x1) - cx) ** 2) / (2 * sigma**2)).astype(np.float32)
            plane[y0:y1, x0:x1] += np.float32(weight) * np.outer(gy, gx * self.attenuation[x0:x1])
        return plane


def write_pair(workdir: Path, shape: tuple[int, int, int]) -> dict[str, Path]:
    """Write ``angle.tif`` and ``fused.tif`` in ``workdir`` plane by plane; return their paths."""
    from fusemycell.io.tiff import write_volume

    paths = {}
    for kind in VOLUMES:
        start = time.perf_counter()
        paths[kind] = write_volume(workdir / f"{kind}.tif", SyntheticVolume(kind, shape), SPACING_ZYX)
        fsync_file(paths[kind])
        print(f"  {kind}: {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return paths


# -- measurement (runs in a fresh child process) ------------------------------------------------


def naive_block_maxima(volume: np.ndarray, block: tuple[int, int, int]) -> np.ndarray:
    """Block maxima of a whole in-memory volume (edge blocks padded with ``-inf``; NaN counts as ``-inf``)."""
    volume = np.where(np.isfinite(volume), volume, -np.inf) if not np.isfinite(volume).all() else volume
    padded_shape = [-(-s // b) * b for s, b in zip(volume.shape, block)]
    if list(volume.shape) != padded_shape:
        padded = np.full(padded_shape, -np.inf, dtype=np.float32)
        padded[: volume.shape[0], : volume.shape[1], : volume.shape[2]] = volume
        volume = padded
    grid = [n // b for n, b in zip(padded_shape, block)]
    return volume.reshape(grid[0], block[0], grid[1], block[1], grid[2], block[2]).max(axis=(1, 3, 5))


def measure(method: str, args: argparse.Namespace) -> dict[str, object]:
    """Cut the patches with ``method`` and return times and memory.

    Meant to run in a process of its own: the peak RSS it reports is that of
    the whole process, with the baseline (after imports, before reading) given
    separately.

    Parameters
    ----------
    method
        ``"ours"`` (lazy reads, :class:`~fusemycell.patching.extract.PatchPlan`)
        or ``"naive"`` (whole volumes with ``tifffile.imread``).
    args
        The command line: volumes and outputs in ``args.workdir``, sampling settings.

    Returns
    -------
    dict
        ``sampling_s``, ``extraction_s``, ``seconds`` (both), ``baseline_kib``
        (peak RSS after imports), ``sampling_peak_kib`` (peak RSS of the
        sampling phase), ``extraction_peak_kib`` (peak RSS of the extraction
        phase, or of the whole run where the peak cannot be reset),
        ``peak_kib`` (the larger), ``ru_maxrss_kib``, and facts about the grid
        and the patches.
    """
    # both methods import the same modules, so both baselines match
    import pandas as pd

    from fusemycell.io.formats import read_volume
    from fusemycell.patching.extract import PatchPlan
    from fusemycell.patching.sampling import ForegroundGrid, foreground_grid, sample_origins

    paths = {kind: args.workdir / f"{kind}.tif" for kind in VOLUMES}
    out = args.workdir / f"store_{method}"
    patch = tuple(args.patch)
    block = tuple(args.block)
    baseline = peak_rss_kib()
    start = time.perf_counter()
    if method == "ours":
        fused = read_volume(paths["fused"], lazy=True).data
        shape = fused.shape
        grid = foreground_grid(fused, block_zyx=block, threshold=args.threshold, slab_depth=args.slab_depth)
        fused.close()
        origins = sample_origins(
            shape,
            patch,
            grid,
            count=args.count,
            background_fraction=args.background_fraction,
            rng=np.random.default_rng(args.seed),
        )
        sampled = time.perf_counter()
        sampling_peak, ru_maxrss = peak_rss_kib(), ru_maxrss_kib()
        reset_peak_rss()
        index = pd.DataFrame(
            [
                {
                    "pair": "synthetic",
                    "origin_z": z,
                    "origin_y": y,
                    "origin_x": x,
                    "drawn": drawn,
                    "foreground_level": args.threshold,
                    "angle_path": str(paths["angle"]),
                    "fused_path": str(paths["fused"]),
                }
                for (z, y, x), drawn in origins
            ]
        )
        PatchPlan(index=index, patch_size_zyx=patch, dtype=args.dtype, split="train").write(out)
    elif method == "naive":
        fused = tifffile.imread(paths["fused"])
        shape = fused.shape
        grid = ForegroundGrid(block_zyx=block, maxima=naive_block_maxima(fused, block), threshold=args.threshold)
        origins = sample_origins(
            shape,
            patch,
            grid,
            count=args.count,
            background_fraction=args.background_fraction,
            rng=np.random.default_rng(args.seed),
        )
        sampled = time.perf_counter()
        sampling_peak, ru_maxrss = peak_rss_kib(), ru_maxrss_kib()
        reset_peak_rss()
        angle = tifffile.imread(paths["angle"])
        out.mkdir(parents=True, exist_ok=True)
        contains = np.zeros(len(origins), dtype=bool)
        for name, volume in (("angle", angle), ("fused", fused)):
            stack = np.empty((len(origins), *patch), dtype=args.dtype)
            for row, ((z, y, x), _) in enumerate(origins):
                box = volume[z : z + patch[0], y : y + patch[1], x : x + patch[2]]
                stack[row] = box
                if name == "fused":
                    contains[row] = box.max() > args.threshold
            np.save(out / f"{name}.npy", stack)
            del stack
        np.save(out / "origins.npy", np.array([origin for origin, _ in origins], dtype=np.int64))
        np.save(out / "drawn.npy", np.array([drawn for _, drawn in origins]))
        np.save(out / "contains_foreground.npy", contains)
    else:
        raise ValueError(f"unknown method {method!r}, expected one of {METHODS}")
    end = time.perf_counter()
    extraction_peak = peak_rss_kib()
    return {
        "sampling_s": sampled - start,
        "extraction_s": end - sampled,
        "seconds": end - start,
        "baseline_kib": baseline,
        "sampling_peak_kib": sampling_peak,
        "extraction_peak_kib": extraction_peak,
        "peak_kib": max(sampling_peak, extraction_peak),
        "ru_maxrss_kib": max(ru_maxrss, ru_maxrss_kib()),
        "foreground_voxels": grid.foreground_voxels(shape),
        "foreground_blocks": int(grid.mask.sum()),
        "blocks": int(grid.mask.size),
        "patches": len(origins),
    }


def run_child(method: str, args: argparse.Namespace) -> dict[str, object]:
    """Run :func:`measure` in a fresh interpreter (this script in ``--measure`` mode)."""
    arguments = [
        "--measure",
        method,
        "--workdir",
        str(args.workdir),
        "--depth",
        str(args.depth),
        "--plane",
        str(args.plane),
        "--count",
        str(args.count),
        "--threshold",
        repr(args.threshold),
        "--background-fraction",
        repr(args.background_fraction),
        "--slab-depth",
        str(args.slab_depth),
        "--seed",
        str(args.seed),
        "--dtype",
        args.dtype,
        "--patch",
        *map(str, args.patch),
        "--block",
        *map(str, args.block),
    ]
    return run_measurement(__file__, arguments, f"measurement {method}")


# -- checks -------------------------------------------------------------------------------------
def compare_stores(ours: Path, naive: Path, dtype: str) -> list[str]:
    """Return the differences between the store written by ``ours`` and the arrays saved by ``naive``.

    Parameters
    ----------
    ours
        A patch store folder (read with :class:`fusemycell.patching.store.PatchStore`).
    naive
        The folder of the naive method: ``angle.npy``, ``fused.npy``, ``origins.npy``,
        ``drawn.npy``, ``contains_foreground.npy``.
    dtype
        The store's data type; the naive patches go through it before comparing.

    Returns
    -------
    list of str
        One line per difference; empty when the stores agree.
    """
    from fusemycell.patching.store import PatchStore

    store = PatchStore(ours)
    origins = np.load(naive / "origins.npy")
    failures = []
    if len(store) != len(origins):
        return [f"ours holds {len(store)} patches, naive {len(origins)}"]
    ours_origins = store.index[["origin_z", "origin_y", "origin_x"]].to_numpy()
    if not np.array_equal(ours_origins, origins):
        failures.append(f"origins differ in {int((ours_origins != origins).any(axis=1).sum())} rows")
    if not np.array_equal(store.index["drawn"].to_numpy().astype(str), np.load(naive / "drawn.npy")):
        failures.append("'drawn' differs")
    if not np.array_equal(store.index["contains_foreground"].to_numpy(), np.load(naive / "contains_foreground.npy")):
        failures.append("'contains_foreground' differs")
    naive_arrays = {name: np.load(naive / f"{name}.npy", mmap_mode="r") for name in VOLUMES}
    differing = {name: 0 for name in VOLUMES}
    for row in range(len(store)):
        for name, patch in zip(VOLUMES, store[row]):
            expected = np.asarray(naive_arrays[name][row]).astype(dtype).astype(np.float32)
            if not np.array_equal(patch, expected):
                differing[name] += 1
    failures += [f"{n} of {len(store)} {name} patches differ" for name, n in differing.items() if n]
    return failures


# -- result and report --------------------------------------------------------------------------
PATCHING_COLUMNS = (
    "method | cache | sampling (s) | extraction (s) | total (s, median [IQR]) | time x naive | "
    "above baseline: sampling (MiB) | extraction (MiB) | run (MiB) | memory x naive"
).split(" | ")


def markdown_table(rows: list[dict[str, object]]) -> list[str]:
    """The measurement rows as a Markdown table, ``ours`` against ``naive`` with the same cache."""
    naive = {r["cache"]: r for r in rows if r["method"] == "naive"}
    lines = []
    for row in rows:
        phases = [f"{row['sampling_s']:.2f}", f"{row['extraction_s']:.2f}"]
        peaks = [
            f"{(row[f'{phase}_peak_kib'] - row['baseline_kib']) / 1024:.0f}" for phase in ("sampling", "extraction")
        ]
        cells = harness.against_reference(row, naive[row["cache"]], 3)  # time, x naive, memory, x naive
        lines.append([row["method"], row["cache"], *phases, *cells[:2], *peaks, *cells[2:]])
    return harness.table(PATCHING_COLUMNS, lines, "llrrrrrrrr")


def report(results: dict) -> None:
    """The Markdown of a result; the reference is ``naive`` (``tifffile.imread`` of both volumes, slicing)."""
    p = results["parameters"]
    shape = results["shape_zyx"]
    volume_gib = np.prod(shape) * 4 / 1024**3
    store_mib = 2 * p["count"] * np.prod(p["patch"]) * np.dtype(p["dtype"]).itemsize / MIB
    first = results["rows"][0]
    print(
        f"### Patch extraction: {p['count']} patches of {'x'.join(map(str, p['patch']))} ({p['dtype']}) from a pair "
        f"of {'x'.join(map(str, shape))} float32 volumes ({volume_gib:.2f} GiB each), {p['repeat']} fresh "
        "processes each\n"
    )
    harness.print_lines(markdown_table(results["rows"]))
    verdict = (
        f"same origins, same `contains_foreground`, all {p['count']} patch pairs identical"
        if not results["failures"]
        else "**FAILED**: " + "; ".join(results["failures"])
    )
    print(
        f"\nForeground grid: blocks {'x'.join(map(str, p['block']))}, threshold {p['threshold']:g}, "
        f"{first['foreground_blocks']} of {first['blocks']} blocks foreground "
        f"({first['foreground_voxels'] / np.prod(shape):.1%} of the voxels); slab depth {p['slab_depth']}; "
        f"store {store_mib:.0f} MiB. Peak RSS is VmHWM of the measuring process above its VmHWM after imports "
        f"(target: ours at most 0.25x naive). Both stores: {verdict}.\n"
    )
    harness.print_lines(harness.provenance(results))


# -- main ---------------------------------------------------------------------------------------
def parse_args() -> argparse.ArgumentParser:
    """The command line (``--measure`` is internal)."""
    parser = harness.parser(__doc__)
    parser.add_argument("--depth", type=int, default=80, help="z-planes per volume (default 80: 1.10 GiB float32)")
    parser.add_argument("--plane", type=int, default=1920, help="y and x size of a plane (default 1920)")
    parser.add_argument("--count", type=int, default=256, help="patches to cut (default 256)")
    parser.add_argument("--patch", type=int, nargs=3, default=[32, 64, 64], metavar=("Z", "Y", "X"))
    parser.add_argument("--block", type=int, nargs=3, default=[16, 32, 32], metavar=("Z", "Y", "X"))
    parser.add_argument("--threshold", type=float, default=0.2, help="foreground level of the fused volume")
    parser.add_argument("--background-fraction", type=float, default=0.25, help="share of uniform patches")
    parser.add_argument("--slab-depth", type=int, default=16, help="planes read at a time by foreground_grid")
    parser.add_argument("--dtype", default="float16", choices=("float16", "float32"), help="store data type")
    parser.add_argument("--seed", type=int, default=0, help="seed of the origin sampling")
    parser.add_argument("--workdir", type=Path, default=None, help="folder for the files (default: a temp dir)")
    parser.add_argument(
        "--cache", choices=("cold", "warm", "both"), default="both", help="page cache state before each run"
    )
    parser.add_argument("--repeat", type=int, default=3, help="fresh-process runs per method; time is the median")
    parser.add_argument("--keep", action="store_true", help="keep the written files")
    parser.add_argument("--measure", choices=METHODS, help=argparse.SUPPRESS)
    return parser


def check_args(args: argparse.Namespace) -> None:
    if min(args.depth, args.plane, args.count, args.repeat, args.slab_depth, *args.patch, *args.block) <= 0:
        raise SystemExit("sizes, --count, --repeat and --slab-depth must be positive")
    if any(p > n for p, n in zip(args.patch, (args.depth, args.plane, args.plane))):
        raise SystemExit("the patch must fit in the volume (the naive method does not pad)")


def measure_repeated(method: str, args: argparse.Namespace, cache: str, paths: dict[str, Path]) -> dict[str, object]:
    """Measure one method ``args.repeat`` times, each in a fresh process, with the page cache set up first.

    Returns
    -------
    dict
        Median times (each phase and total) and the memory figures of the run
        with the highest peak.
    """
    results = []
    for _ in range(args.repeat):
        for path in paths.values():
            if cache == "cold":
                drop_from_page_cache(path)
            else:
                read_through(path)
        results.append(run_child(method, args))
    worst = max(results, key=lambda result: result["peak_kib"])  # type: ignore[arg-type, return-value]
    medians = {key: float(np.median([r[key] for r in results])) for key in ("sampling_s", "extraction_s", "seconds")}
    medians["seconds_iqr"] = harness.summary([float(r["seconds"]) for r in results])["iqr"]
    return {**worst, **medians}


def benchmark(args: argparse.Namespace) -> dict:
    """Write the volume pair, measure both methods, compare the stores: the result's rows and failures."""
    shape = (args.depth, args.plane, args.plane)
    print(f"writing two {'x'.join(map(str, shape))} float32 volumes to {args.workdir}", file=sys.stderr)
    paths = write_pair(args.workdir, shape)

    caches = ("cold", "warm") if args.cache == "both" else (args.cache,)
    rows, failures = [], []
    for cache in caches:
        for method in METHODS:
            row = measure_repeated(method, args, cache, paths)
            rows.append({"method": method, "cache": cache, **row})
            print(f"  {method} {cache}: {row['seconds']:.2f} s (median)", file=sys.stderr)
        ours, naive = rows[-2:]
        if (ours["foreground_blocks"], ours["foreground_voxels"]) != (
            naive["foreground_blocks"],
            naive["foreground_voxels"],
        ):
            failures.append(
                f"{cache}: foreground grids differ ({ours['foreground_blocks']} vs {naive['foreground_blocks']} blocks)"
            )
        failures += [
            f"{cache}: {f}"
            for f in compare_stores(args.workdir / "store_ours", args.workdir / "store_naive", args.dtype)
        ]

    return {"shape_zyx": list(shape), "rows": rows, "failures": failures}


def measure_child(args: argparse.Namespace) -> int | None:
    if not args.measure:
        return None
    print(json.dumps(measure(args.measure, args)))
    return 0


def run(args: argparse.Namespace) -> dict:
    """Write the pair, measure both methods, remove the files (unless ``--keep``)."""
    check_args(args)
    created = args.workdir is None
    if created:
        args.workdir = Path(tempfile.mkdtemp(prefix="patching_"))
    else:
        args.workdir.mkdir(parents=True, exist_ok=True)
    try:
        return benchmark(args)
    finally:
        if not args.keep:
            if created:
                shutil.rmtree(args.workdir, ignore_errors=True)
            else:
                for kind in VOLUMES:
                    (args.workdir / f"{kind}.tif").unlink(missing_ok=True)
                for method in METHODS:
                    shutil.rmtree(args.workdir / f"store_{method}", ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (result in ``benchmarks/results/``), or one measurement with ``--measure``."""
    return harness.main(__file__, argv, parse_args(), run, report, child=measure_child)


if __name__ == "__main__":
    sys.exit(main())
