"""Benchmark: reading a z-slab lazily versus reading the whole volume first.

The script writes a uint16 ZYX volume of at least ``--size-gb`` GiB to disk in
two layouts, never holding the whole volume in memory:

``imagej``
    a contiguous, uncompressed ImageJ hyperstack like the challenge data,
    written by ``tifffile.imwrite`` from a generator of planes;
``tiled``
    the project's own tiled BigTIFF (128x128 tiles), written by
    :func:`fusemycell.io.tiff.write_volume` streaming the lazy volume of the
    first file plane by plane.

For each layout it reads ``--slab`` planes from the middle of the volume in
two ways, each in a fresh Python process so that the peak resident memory of
one read does not hide that of another:

``naive``
    the reference: ``tifffile.imread(path)[z0:z0 + slab]`` (reads everything);
``lazy``
    ``read_volume(path, lazy=True).data[z0:z0 + slab]`` (reads the slab).

Peak memory is the measuring process's ``VmHWM`` (peak resident set size of
its memory image), with its value right after imports as the baseline.
``ru_maxrss`` is reported beside it but is not used: on Linux a process
started by ``fork``/``vfork`` + ``exec`` inherits the parent's peak in it.

It checks that the lazy slab equals the naive slab (and the naive slab the
values written) and exits with status 1 if not, then prints a Markdown table of
wall time and peak RSS and a description of the machine.

With ``--cache cold`` (the default is ``both``) the file's pages are dropped
from the OS page cache (``posix_fadvise(DONTNEED)``) before each read, so the
read comes from disk; ``warm`` reads a file that was just read.

Usage::

    python benchmarks/lazy_read.py [--size-gb 1.1] [--slab 16] [--workdir DIR] [--cache both] [--repeat 3] [--keep]
    python benchmarks/lazy_read.py --report benchmarks/results/lazy-read-DATE.json
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import harness
import numpy as np
import tifffile
from _measure import MIB, drop_from_page_cache, fsync_file, peak_rss_kib, ru_maxrss_kib, run_measurement

#: Plane size of the challenge volumes (y, x).
PLANE_SHAPE = (1920, 1920)
#: Voxel size (z, y, x) in micrometres written into the files.
SPACING_ZYX = (2.0, 0.65, 0.65)
LAYOUTS = ("imagej", "tiled")
METHODS = ("naive", "lazy")


# -- synthetic volume ---------------------------------------------------------------------------
def make_plane(z: int, plane_shape: tuple[int, int] = PLANE_SHAPE) -> np.ndarray:
    """Return z-plane ``z`` of the synthetic volume, the same on every call.

    Parameters
    ----------
    z
        Plane index; it seeds the random generator, so any plane can be
        regenerated on its own to check what was read.
    plane_shape
        ``(y, x)`` size of the plane.

    Returns
    -------
    numpy.ndarray
        A uint16 plane of 12-bit noise (camera-like values).
    """
    rng = np.random.default_rng(z)
    return rng.integers(0, 4096, size=plane_shape, dtype=np.uint16)


def expected_slab(z0: int, z1: int) -> np.ndarray:
    """Return planes ``z0`` to ``z1 - 1`` of the synthetic volume as a ``(z, y, x)`` array."""
    return np.stack([make_plane(z) for z in range(z0, z1)])


def depth_for(size_gib: float, plane_shape: tuple[int, int] = PLANE_SHAPE) -> int:
    """Return the number of uint16 planes needed for a volume of at least ``size_gib`` GiB."""
    plane_bytes = plane_shape[0] * plane_shape[1] * np.dtype(np.uint16).itemsize
    return max(1, math.ceil(size_gib * 1024**3 / plane_bytes))


def write_imagej(path: Path, depth: int) -> Path:
    """Write the synthetic volume as a contiguous ImageJ hyperstack, one plane at a time.

    Parameters
    ----------
    path
        Target ``.tif`` file.
    depth
        Number of z-planes.

    Returns
    -------
    pathlib.Path
        ``path``, written and flushed to disk.
    """

    def planes() -> Iterator[np.ndarray]:
        for z in range(depth):
            yield make_plane(z)

    spacing_z, spacing_y, spacing_x = SPACING_ZYX
    tifffile.imwrite(
        path,
        planes(),
        shape=(depth, *PLANE_SHAPE),
        dtype=np.uint16,
        imagej=True,
        resolution=(1.0 / spacing_x, 1.0 / spacing_y),
        metadata={
            "axes": "ZYX",
            "spacing": spacing_z,
            "unit": "um",
            "PhysicalSizeX": spacing_x,
            "PhysicalSizeY": spacing_y,
            "PhysicalSizeZ": spacing_z,
        },
    )
    fsync_file(path)
    return path


def write_tiled(path: Path, source: Path) -> Path:
    """Copy ``source`` into the project's tiled BigTIFF layout, streaming plane by plane.

    Parameters
    ----------
    path
        Target ``.tif`` file.
    source
        A volume readable by :func:`fusemycell.io.formats.read_volume`; it is read
        lazily, so memory stays at about one plane.

    Returns
    -------
    pathlib.Path
        ``path``, written and flushed to disk.
    """
    from fusemycell.io.formats import read_volume
    from fusemycell.io.tiff import write_volume

    volume = read_volume(source, lazy=True)
    try:
        write_volume(path, volume.data, volume.spacing_zyx, volume.metadata, spelling=volume.spelling)
    finally:
        volume.data.close()
    fsync_file(path)
    return path


# -- measurement (runs in a fresh child process) ------------------------------------------------


def measure(method: str, path: Path, z0: int, slab: int, out: Path) -> dict[str, object]:
    """Read planes ``z0:z0 + slab`` of ``path`` with ``method`` and return time and memory.

    Meant to run in a process of its own: the peak RSS it reports is that of
    the whole process, with the baseline (after imports, before reading) given
    separately.

    Parameters
    ----------
    method
        ``"naive"`` (``tifffile.imread`` of the whole file, then the slab) or
        ``"lazy"`` (``read_volume(path, lazy=True).data[z0:z0 + slab]``).
    path
        The TIFF file.
    z0, slab
        First plane and number of planes of the slab.
    out
        Where to save the slab (``.npy``) for the parent to compare.

    Returns
    -------
    dict
        ``seconds``, ``baseline_kib`` (peak RSS after imports, before reading),
        ``peak_kib`` (peak RSS after reading), ``ru_maxrss_kib`` (see
        :func:`_ru_maxrss_kib`), ``slab_shape``.
    """
    from fusemycell.io.formats import read_volume  # imported by both methods, so both baselines match

    baseline = peak_rss_kib()
    start = time.perf_counter()
    if method == "naive":
        full = tifffile.imread(path)
        data = full[z0 : z0 + slab].copy()
        del full
    elif method == "lazy":
        volume = read_volume(path, lazy=True)
        data = volume.data[z0 : z0 + slab]
        volume.data.close()
    else:
        raise ValueError(f"unknown method {method!r}, expected one of {METHODS}")
    seconds = time.perf_counter() - start
    peak = peak_rss_kib()
    ru_maxrss = ru_maxrss_kib()
    np.save(out, data)
    return {
        "seconds": seconds,
        "baseline_kib": baseline,
        "peak_kib": peak,
        "ru_maxrss_kib": ru_maxrss,
        "slab_shape": list(data.shape),
    }


def run_child(method: str, path: Path, z0: int, slab: int, out: Path) -> dict[str, object]:
    """Run :func:`measure` in a fresh interpreter (this script in ``--measure`` mode)."""
    arguments = ["--measure", method, "--path", str(path), "--z0", str(z0), "--slab", str(slab), "--slab-out", str(out)]
    return run_measurement(__file__, arguments, f"measurement {method} of {path}")


# -- result and report --------------------------------------------------------------------------
READ_COLUMNS = (
    "layout | method | cache | file size | "
    "slab | time (s, median [IQR]) | time x naive | RSS above baseline (MiB) | memory x naive"
).split(" | ")


def markdown_table(rows: list[dict[str, object]]) -> list[str]:
    """The measurement rows as a Markdown table, each read against the naive read of the same file and cache."""
    naive = {(r["layout"], r["cache"]): r for r in rows if r["method"] == "naive"}
    lines = []
    for row in rows:
        shape = "x".join(str(s) for s in row["slab_shape"])  # type: ignore[attr-defined]
        cells = [row["layout"], row["method"], row["cache"], f"{row['file_bytes'] / 1024**3:.2f} GiB", shape]
        lines.append(cells + harness.against_reference(row, naive[(row["layout"], row["cache"])]))
    return harness.table(READ_COLUMNS, lines, "lllrlrrrr")


def report(results: dict) -> None:
    """The Markdown of a result; the reference of every row is the naive read (``tifffile.imread`` of the file)."""
    p = results["parameters"]
    print(
        f"### Lazy slab read: {results['slab']} planes from z={results['z0']} of a {results['shape']} uint16 volume, "
        f"{p['repeat']} fresh processes each\n"
    )
    harness.print_lines(markdown_table(results["rows"]))
    print(
        "\nReference: `naive`, `tifffile.imread(path)[z0:z0 + slab]`. Peak RSS is VmHWM of the measuring process "
        "above its VmHWM after imports (the run with the highest peak). "
        + ("All slabs equal (lazy == naive == values written).\n" if not results["failures"] else "**FAILED**.\n")
    )
    harness.print_lines(harness.provenance(results))


# -- main ---------------------------------------------------------------------------------------
def parse_args() -> argparse.ArgumentParser:
    """The command line (``--measure`` and its options are internal)."""
    parser = harness.parser(__doc__)
    parser.add_argument("--size-gb", type=float, default=1.1, help="volume size in GiB (default 1.1)")
    parser.add_argument("--slab", type=int, default=16, help="planes per slab (default 16)")
    parser.add_argument("--workdir", type=Path, default=None, help="folder for the files (default: a temp dir)")
    parser.add_argument(
        "--cache",
        choices=("cold", "warm", "both"),
        default="both",
        help="page cache state before each read (default both)",
    )
    parser.add_argument("--repeat", type=int, default=3, help="fresh-process runs per read; time is the median")
    parser.add_argument("--keep", action="store_true", help="keep the written files")
    parser.add_argument("--measure", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--z0", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--slab-out", type=Path, help=argparse.SUPPRESS)
    return parser


def measure_repeated(
    method: str, path: Path, cache: str, z0: int, slab: int, *, repeat: int
) -> tuple[dict[str, object], np.ndarray]:
    """Measure one read ``repeat`` times, each in a fresh process, with the page cache set up before each.

    Parameters
    ----------
    method
        ``"naive"`` or ``"lazy"`` (see :func:`measure`).
    path
        The TIFF file.
    cache
        ``"cold"``: drop the file from the page cache first; ``"warm"``: read
        the whole file first so it is cached.
    z0, slab
        First plane and number of planes of the slab.
    repeat
        Number of runs.

    Returns
    -------
    tuple
        The row (``file_bytes``, median ``seconds``, and the memory figures
        and ``slab_shape`` of the run with the highest peak) and the slab read
        by the last run.
    """
    out = path.with_name(f"{path.stem}_{method}_slab.npy")
    results = []
    for _ in range(repeat):
        if cache == "cold":
            drop_from_page_cache(path)
        else:
            with path.open("rb") as handle:
                while handle.read(64 * MIB):
                    pass
        results.append(run_child(method, path, z0, slab, out))
    data = np.load(out)
    out.unlink()
    worst = max(results, key=lambda result: result["peak_kib"])  # type: ignore[arg-type, return-value]
    seconds = harness.summary([float(r["seconds"]) for r in results])
    row = {**worst, "seconds": seconds["median"], "seconds_iqr": seconds["iqr"], "file_bytes": path.stat().st_size}
    return row, data


def benchmark(args: argparse.Namespace, workdir: Path) -> dict:
    """Write both layouts in ``workdir``, measure every read: the result's rows and failures."""
    depth = depth_for(args.size_gb)
    slab = min(args.slab, depth)
    z0 = (depth - slab) // 2
    files = {"imagej": workdir / "volume_imagej.tif", "tiled": workdir / "volume_tiled.tif"}
    print(f"writing {depth} x {PLANE_SHAPE[0]} x {PLANE_SHAPE[1]} uint16 volumes to {workdir}", file=sys.stderr)
    start = time.perf_counter()
    write_imagej(files["imagej"], depth)
    print(f"  imagej: {time.perf_counter() - start:.1f} s", file=sys.stderr)
    start = time.perf_counter()
    write_tiled(files["tiled"], files["imagej"])
    print(f"  tiled: {time.perf_counter() - start:.1f} s", file=sys.stderr)

    caches = ("cold", "warm") if args.cache == "both" else (args.cache,)
    reference = expected_slab(z0, z0 + slab)
    rows, failures = [], []
    for layout in LAYOUTS:
        path = files[layout]
        for cache in caches:
            slabs = {}
            for method in METHODS:
                row, slabs[method] = measure_repeated(method, path, cache, z0, slab, repeat=args.repeat)
                rows.append({"layout": layout, "method": method, "cache": cache, **row})
                print(f"  {layout} {method} {cache}: {row['seconds']:.2f} s (median)", file=sys.stderr)
            if not np.array_equal(slabs["lazy"], slabs["naive"]):
                failures.append(f"{layout} ({cache}): lazy slab differs from naive slab")
            if not np.array_equal(slabs["naive"], reference):
                failures.append(f"{layout} ({cache}): naive slab differs from the values written")

    shape = f"{depth}x{PLANE_SHAPE[0]}x{PLANE_SHAPE[1]}"
    return {"shape": shape, "slab": slab, "z0": z0, "rows": rows, "failures": failures}


def measure_child(args: argparse.Namespace) -> int | None:
    if not args.measure:
        return None
    print(json.dumps(measure(args.measure, args.path, args.z0, args.slab, args.slab_out)))
    return 0


def run(args: argparse.Namespace) -> dict:
    """Write the files, measure every read, remove the files (unless ``--keep``)."""
    if args.size_gb <= 0 or args.slab <= 0 or args.repeat <= 0:
        raise SystemExit("--size-gb, --slab and --repeat must be positive")
    if args.workdir is None:
        workdir = Path(tempfile.mkdtemp(prefix="lazy_read_"))
        created = True
    else:
        workdir = args.workdir
        workdir.mkdir(parents=True, exist_ok=True)
        created = False
    try:
        return benchmark(args, workdir)
    finally:
        if not args.keep:
            if created:
                shutil.rmtree(workdir, ignore_errors=True)
            else:
                for name in ("volume_imagej.tif", "volume_tiled.tif"):
                    (workdir / name).unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (result in ``benchmarks/results/``), or one measurement with ``--measure``."""
    return harness.main(__file__, argv, parse_args(), run, report, child=measure_child)


if __name__ == "__main__":
    sys.exit(main())
