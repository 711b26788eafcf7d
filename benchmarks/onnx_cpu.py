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
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import _measure
import numpy as np
from time_shares import make_input


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", type=int, nargs=3, default=[32, 256, 256])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--model", default="data/06_models/fusemycell_unet.pt")
    parser.add_argument("--onnx", default="data/06_models/fusemycell_unet.onnx")
    parser.add_argument("--workdir", type=Path, default=None)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run both backends and print the table."""
    args = parse_args(argv)

    import onnxruntime
    import torch

    from fusemycell.inference.apply import InferenceSettings, predict_file
    from fusemycell.inference.backends import TorchBackend
    from fusemycell.inference.onnx_backend import OnnxBackend
    from fusemycell.inference.tiling import TileGrid
    from fusemycell.io.formats import read_volume
    from fusemycell.io.tiff import save_volume
    from fusemycell.models.checkpoint import load_model

    model = load_model(args.model)
    tile = model.card.default_tile_zyx
    backends = {
        "PyTorch (TorchBackend, CPU float32)": TorchBackend(model.network, "cpu", amp=False),
        "ONNX Runtime (OnnxBackend, CPUExecutionProvider)": OnnxBackend(args.onnx, ["CPUExecutionProvider"]),
    }
    batch = np.random.default_rng(0).random((4, 1, *tile), dtype=np.float32)
    raw = {name: backend(batch) for name, backend in backends.items()}  # warm-up, and the raw outputs
    raw_diff = float(np.max(np.abs(np.subtract(*raw.values()))))
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="onnx_cpu_"))
    workdir.mkdir(parents=True, exist_ok=True)
    times: dict[str, list[float]] = {name: [] for name in backends}
    try:
        path = workdir / "input.tif"
        make_input(path, tuple(args.shape))
        settings = InferenceSettings(device="cpu", amp=False)
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
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)

    tiles = len(TileGrid(tuple(args.shape), tile, settings.overlap))
    name = "x".join(map(str, args.shape))
    print(
        f"## ONNX Runtime vs PyTorch on CPU: {name} uint16 file to file, tile {'x'.join(map(str, tile))}, "
        f"overlap 0.5, batch 4, {tiles} tiles\n"
    )
    print("| backend | time per file (s, median) | every run (s) | ms per tile |\n|---|---:|---|---:|")
    medians = {}
    for backend_name, runs in times.items():
        medians[backend_name] = statistics.median(runs)
        print(
            f"| {backend_name} | {medians[backend_name]:.1f} | {', '.join(f'{t:.1f}' for t in runs)} "
            f"| {1000 * medians[backend_name] / tiles:.0f} |"
        )
    torch_time, onnx_time = medians.values()
    print(f"\nONNX Runtime / PyTorch time: {onnx_time / torch_time:.2f}")
    print(f"Largest difference of the raw outputs (4 tiles, float32, network scale): {raw_diff:.2e}")
    print(f"Largest difference of the output files: {file_diff} uint16 levels ({differing} voxels differ)")
    print("\nMachine:\n")
    print(
        "\n".join(
            _measure.machine_description(
                f"numpy {np.__version__}, torch {torch.__version__}, onnxruntime {onnxruntime.__version__}",
                cpus=f"- CPUs: 2 (torch threads {torch.get_num_threads()})",
            )
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
