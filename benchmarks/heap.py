"""Benchmark: exact tiling with glibc's default heap against the steady heap, time, peak memory and plan.

One uint16 file (``--shape``, default 48x256x256, made as in ``time_shares.py``) is predicted file to
file (``predict_file`` + ``save_volume``, exact tiling planned for ``--memory-gb``) by the ``mac``
network (its configuration, weights drawn with seed 0: the memory and the time do not depend on
training), each run in a fresh process, the two heaps alternately ``--repeat`` times:

* ``glibc default`` (the reference, ``inference.steady_heap: false``): glibc's own policy, a threshold
  for mapping a buffer on its own that rises as the program runs, freed pages kept in the heap;
* ``steady heap`` (``inference.steady_heap: true``, the default): what :func:`fusemycell.memory.steady_heap`
  sets before the plan (every buffer from 64 KiB on mapped on its own and given back when freed).

Each process predicts the file twice: the first time plans (measures the network in a rehearsal: two
calls on the steady heap, eight on glibc's own), the second reuses the plan, as the next volume of a
folder does. Reported per heap: wall time of each (median [IQR]), the peak resident set above the
process's after the model is built (VmHWM, over both), the memory plan (the network measured in the run, the host's
buffers counted) and peak / plan for every run. Both heaps must write the same file.

Usage::

    python benchmarks/heap.py [--shape 48 256 256] [--memory-gb 1.0] [--repeat 3]
    python benchmarks/heap.py --report benchmarks/results/heap-DATE.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import harness
from _measure import mac_unet_config, peak_rss_kib, reset_peak_rss, run_measurement
from time_shares import SPACING_ZYX, make_input

#: The heaps, the reference first.
HEAPS = ("glibc default", "steady heap")


def parse_args() -> argparse.ArgumentParser:
    """The command line (``--measure`` and its options are internal)."""
    parser = harness.parser(__doc__)
    parser.add_argument("--shape", type=int, nargs=3, default=[48, 256, 256])
    parser.add_argument("--memory-gb", type=float, default=1.0, help="inference.memory_gb of every run")
    parser.add_argument("--repeat", type=int, default=3, help="fresh-process runs per heap")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--measure", choices=HEAPS, help=argparse.SUPPRESS)
    parser.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, help=argparse.SUPPRESS)
    return parser


def measure(heap: str, path: Path, output: Path, memory_gb: float) -> dict:
    """One file-to-file prediction in this (fresh) process with ``heap``: time, peak, plan, output digest."""
    import torch

    from fusemycell.inference.apply import predict_file
    from fusemycell.inference.backends import TorchBackend
    from fusemycell.inference.predictor import host_load, plan_bytes, plan_exact
    from fusemycell.inference.settings import InferenceSettings
    from fusemycell.inference.transform import InputTransform, scan_input
    from fusemycell.io.tiff import save_volume
    from fusemycell.models.card import card_for
    from fusemycell.models.unet import UNet3D

    torch.manual_seed(0)
    config = mac_unet_config(spacing_zyx=SPACING_ZYX)
    network = UNet3D(config).eval()
    card = card_for(config, (16, 64, 64))
    backend = TorchBackend(network, "cpu", amp=False)
    steady = heap == "steady heap"
    settings = InferenceSettings(
        device="cpu", amp=False, memory_gb=memory_gb, crop_to_specimen=False, steady_heap=steady
    )
    baseline = peak_rss_kib() if reset_peak_rss() else 0
    start = time.perf_counter()
    save_volume(output, predict_file(str(path), backend, settings, card))
    seconds = time.perf_counter() - start
    start = time.perf_counter()  # the next volume of that shape: its plan (the rehearsal) cached
    save_volume(output, predict_file(str(path), backend, settings, card))
    seconds_again = time.perf_counter() - start
    peak = peak_rss_kib()
    source = InputTransform.from_card(card, scan_input(str(path), card)).network_input(str(path))
    load = host_load(source, card.architecture, 1, backend)
    grid = plan_exact(source.shape, backend, card.architecture, settings.tile_settings, load)  # the run's, cached
    plan = plan_bytes(grid, load, backend, card.architecture.in_channels, settings.tile_settings)
    return {
        "seconds": seconds,
        "seconds_again": seconds_again,
        "peak_mib": (peak - baseline) / 1024,
        "plan_mib": plan / 2**20,
        "tile_zyx": list(grid.tile),
        "tiles": len(grid),
        "output_sha256": hashlib.sha256(output.read_bytes()).hexdigest(),
    }


def child(args: argparse.Namespace) -> int | None:
    """The measuring child: one run, its JSON on the last stdout line."""
    if args.measure is None:
        return None
    print(json.dumps(measure(args.measure, args.path, args.output, args.memory_gb)))
    return 0


def run(args: argparse.Namespace) -> dict:
    """Every heap ``--repeat`` times, alternately, each run in a fresh process."""
    runs: dict[str, list[dict]] = {heap: [] for heap in HEAPS}
    with harness.scratch_folder(args.workdir, "heap_") as workdir:
        path = workdir / "input.tif"
        make_input(path, tuple(args.shape))
        for _ in range(args.repeat):
            for index, heap in enumerate(HEAPS):
                arguments = ["--measure", heap, "--path", str(path), "--output", str(workdir / f"out_{index}.tif")]
                result = run_measurement(__file__, [*arguments, "--memory-gb", str(args.memory_gb)], heap)
                runs[heap].append(result)
                print(f"  {heap}: {result['seconds']:.1f} s, peak {result['peak_mib']:.0f} MiB", file=sys.stderr)
    digests = {r["output_sha256"] for rs in runs.values() for r in rs}
    rows = [
        {
            "heap": heap,
            "seconds": harness.summary([r["seconds"] for r in rs]),
            "seconds_again": harness.summary([r["seconds_again"] for r in rs]),
            "peak_mib": harness.summary([r["peak_mib"] for r in rs]),
            "plan_mib": harness.summary([r["plan_mib"] for r in rs]),
            "peak_over_plan": [round(r["peak_mib"] / r["plan_mib"], 3) for r in rs],
            "tiles": sorted({r["tiles"] for r in rs}),
            "tile_zyx": sorted({tuple(r["tile_zyx"]) for r in rs}),
        }
        for heap, rs in runs.items()
    ]
    failures = [] if len(digests) == 1 else [f"the heaps wrote {len(digests)} different files"]
    return {"rows": rows, "failures": failures}


def report(results: dict) -> None:
    """The Markdown of a result; the reference is glibc's default heap."""
    p = results["parameters"]
    print(
        f"### The steady heap against glibc's default: {'x'.join(map(str, p['shape']))} uint16 file to file, "
        f"exact tiling for memory_gb {p['memory_gb']}, the mac network, {p['repeat']} fresh processes each\n"
    )
    reference = results["rows"][0]
    rows = [
        [
            r["heap"],
            f"{r['seconds']['median']:.1f} [{r['seconds']['iqr']:.1f}]",
            f"{r['seconds']['median'] / reference['seconds']['median']:.2f}",
            f"{r['seconds_again']['median']:.1f} [{r['seconds_again']['iqr']:.1f}]",
            f"{r['seconds_again']['median'] / reference['seconds_again']['median']:.2f}",
            f"{r['peak_mib']['median']:.0f} [{r['peak_mib']['iqr']:.0f}]",
            f"{r['peak_mib']['median'] / reference['peak_mib']['median']:.2f}",
            f"{r['plan_mib']['median']:.0f}",
            ", ".join(f"{v:.2f}" for v in r["peak_over_plan"]),
            " / ".join("x".join(map(str, t)) for t in r["tile_zyx"]),
        ]
        for r in results["rows"]
    ]
    header = [
        "heap",
        "first file, planned (s, median [IQR])",
        "time x glibc",
        "second file, plan cached (s)",
        "time x glibc",
        "peak above start (MiB, median [IQR])",
        "peak x glibc",
        "plan (MiB)",
        "peak / plan, every run",
        "planned tile",
    ]
    harness.print_lines(harness.table(header, rows, "lrrrrrrrll"))
    same = (
        "Both heaps wrote the same file."
        if not results["failures"]
        else "**FAILED**: " + "; ".join(results["failures"])
    )
    print(f"\nPeak: VmHWM of the run's process above its VmHWM after the model was built. {same}\n")
    harness.print_lines(harness.provenance(results))


def main(argv: list[str] | None = None) -> int:
    """Run both heaps; write the result; print its table."""
    return harness.main(__file__, argv, parse_args(), run, report, child=child)


if __name__ == "__main__":
    sys.exit(main())
