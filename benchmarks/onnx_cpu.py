"""Benchmark: ONNX Runtime versus PyTorch on CPU, same file, same tiles.

One uint16 file (``--shape``, default 32x256x256, made as in ``time_shares.py``)
is predicted file to file (``predict_file`` + ``save_volume``, tile = the
training patch doubled in y and x, overlap 0.5, batch 4) with the trained
``mac`` model through ``TorchBackend`` (CPU, float32) and through
``OnnxBackend`` on its export (``--onnx``, default
``data/06_models/fusemycell_unet.onnx``, written by the training pipeline),
alternately ``--repeat`` times in one process after one warm-up batch each.
Reported: wall time per file (median), seconds per tile, the largest difference
of the two backends' raw outputs on one batch of tiles (float32), and of the two
output files (uint16 levels).

Usage::

    python benchmarks/onnx_cpu.py [--shape 32 256 256] [--repeat 2] [--model PATH] [--onnx PATH]
    python benchmarks/onnx_cpu.py --report benchmarks/results/onnx-cpu-DATE.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import harness
import numpy as np
from time_shares import make_input


def parse_args() -> argparse.ArgumentParser:
    """The command line."""
    parser = harness.parser(__doc__)
    parser.add_argument("--shape", type=int, nargs=3, default=[32, 256, 256])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--model", default="data/06_models/fusemycell_unet.pt")
    parser.add_argument("--onnx", default="data/06_models/fusemycell_unet.onnx")
    parser.add_argument("--workdir", type=Path, default=None)
    return parser


#: The pinned reference: PyTorch on the CPU in float32 (``TorchBackend(network, "cpu", amp=False)``).
REFERENCE = "PyTorch (TorchBackend, CPU float32)"


def run(args: argparse.Namespace) -> dict:
    """Both backends on one file, alternately: times, tiles and the differences of their outputs."""
    from fusemycell.inference.apply import InferenceSettings, predict_file
    from fusemycell.inference.backends import TorchBackend
    from fusemycell.inference.onnx_backend import OnnxBackend
    from fusemycell.inference.tiling import TileGrid
    from fusemycell.io.formats import read_volume
    from fusemycell.io.tiff import save_volume
    from fusemycell.models.model_file import load_model

    model = load_model(args.model)
    tile = model.card.default_tile_zyx
    backends = {
        REFERENCE: TorchBackend(model.network, "cpu", amp=False),
        "ONNX Runtime (OnnxBackend, CPUExecutionProvider)": OnnxBackend(args.onnx, ["CPUExecutionProvider"]),
    }
    batch = np.random.default_rng(0).random((4, 1, *tile), dtype=np.float32)
    raw = {name: backend(batch) for name, backend in backends.items()}  # warm-up, and the raw outputs
    raw_diff = float(np.max(np.abs(np.subtract(*raw.values()))))
    times: dict[str, list[float]] = {name: [] for name in backends}
    with harness.scratch_folder(args.workdir, "onnx_cpu_") as workdir:
        path = workdir / "input.tif"
        make_input(path, tuple(args.shape))
        settings = InferenceSettings(device="cpu", amp=False, tiling="blend")  # the tiles the table names
        outputs = {}
        for _ in range(args.repeat):
            for index, (name, backend) in enumerate(backends.items()):
                outputs[name] = workdir / f"output_{index}.tif"
                start = time.perf_counter()
                save_volume(outputs[name], predict_file(str(path), backend, settings, model.card))
                times[name].append(time.perf_counter() - start)
                print(f"  {name}: {times[name][-1]:.1f} s", file=sys.stderr)
        files = [read_volume(p).data.astype(np.int32) for p in outputs.values()]
        file_diff = int(np.max(np.abs(files[0] - files[1])))
        differing = int(np.count_nonzero(files[0] != files[1]))

    tiles = len(TileGrid(tuple(args.shape), tile, settings.overlap))
    rows = [{"backend": name, "seconds": harness.summary(runs)} for name, runs in times.items()]
    return {
        "tile_zyx": list(tile),
        "tiles": tiles,
        "rows": rows,
        "raw_difference": raw_diff,
        "file_difference_levels": file_diff,
        "differing_voxels": differing,
    }


def report(results: dict) -> None:
    """The Markdown of a result: each backend against the pinned reference, PyTorch on the CPU in float32."""
    shape, tile = results["parameters"]["shape"], results["tile_zyx"]
    tiles = results["tiles"]
    print(
        f"### ONNX Runtime against PyTorch on CPU: {'x'.join(map(str, shape))} uint16 file to file, "
        f"tile {'x'.join(map(str, tile))}, overlap 0.5, batch 4, {tiles} tiles\n"
    )
    reference = next(r for r in results["rows"] if r["backend"] == REFERENCE)["seconds"]["median"]
    rows = [
        [
            r["backend"],
            f"{r['seconds']['median']:.1f} [{r['seconds']['iqr']:.1f}]",
            ", ".join(f"{t:.1f}" for t in r["seconds"]["values"]),
            f"{1000 * r['seconds']['median'] / tiles:.0f}",
            f"{r['seconds']['median'] / reference:.2f}",
        ]
        for r in results["rows"]
    ]
    header = ["backend", "time per file (s, median [IQR])", "every run (s)", "ms per tile", "time x PyTorch"]
    harness.print_lines(harness.table(header, rows, "lrlrr"))
    print(
        f"\nLargest difference of the raw outputs (4 tiles, float32, network scale): {results['raw_difference']:.2e}; "
        f"of the output files: {results['file_difference_levels']} uint16 levels "
        f"({results['differing_voxels']} voxels differ).\n"
    )
    harness.print_lines(harness.provenance(results))


def main(argv: list[str] | None = None) -> int:
    """Run both backends; write the result; print its table."""
    return harness.main(__file__, argv, parse_args(), run, report)


if __name__ == "__main__":
    sys.exit(main())
