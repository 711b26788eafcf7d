"""GPU check (the Python part of ``gpu_check.sh``): train the ``cloud`` model briefly, then predict a full study.

1. **Train** the ``cloud`` configuration (``conf/base`` + ``conf/cloud``: U-Net depth
   5, 32 base channels, patches 64x128x128, batch 4, bf16, one GPU) with the
   project's engine on simulated patches made here (a sparse field of blurred
   nuclei as the target; the single view is it blurred more along z, dimmed with
   depth and noisy), for ``--train-seconds`` (the epoch running when the time is
   up is finished; the best epoch's model is used).
2. **Predict** a ``--depth`` x 1920 x 1920 uint16 volume (default 300, the
   largest study, 2.1 GiB) file to file with that model, as the inference
   pipeline does (``predict_file`` + ``save_volume``, background reader/writer): a tile-invariant
   model (``normalization: none``, the default) with exact tiling, its tiles planned from the GPU's
   free memory (and ``--memory-gb`` on the host); a model that normalises each tile with blended
   tiles of its training patch doubled in y and x (overlap 0.5); through
   ``TorchBackend``: bf16 autocast, ``torch.inference_mode``, pinned host
   buffers with asynchronous copies, batch size from the free device memory
   (:func:`batch_size_for`).

Reported: the device, the training epochs and their time, and for the prediction
the time per volume, tiles per second, the batch size, and the peak host (VmHWM)
and device (``torch.cuda.max_memory_allocated``) memory; the result goes to
``benchmarks/results/gpu-check-DATE.json`` (a ``--smoke`` run's to a temporary file). Where
CUDA is missing the same code runs on the CPU (no bf16, no
pinned memory); ``--smoke`` shrinks every size so that this takes about a
minute on a laptop: it proves the script, not the GPU.

Usage::

    python benchmarks/gpu_check.py [--train-seconds 150] [--depth 300] [--smoke] [--workdir DIR] [--out FILE]
    python benchmarks/gpu_check.py --report benchmarks/results/gpu-check-DATE.json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import harness
import numpy as np
import yaml
from _measure import peak_rss_kib

ROOT = Path(__file__).resolve().parents[1]
SPACING_ZYX = (2.0, 0.39, 0.39)


class _TimeUp(Exception):
    """Raised from the epoch callback when the training budget is spent."""


def cloud_training_parameters() -> dict:
    """``params:training`` and the patch size of ``conf/base`` merged with ``conf/cloud`` (keys the latter names)."""

    def merge(base: dict, override: dict) -> dict:
        merged = dict(base)
        for key, value in override.items():
            merged[key] = merge(base.get(key, {}), value) if isinstance(value, dict) else value
        return merged

    base = yaml.safe_load((ROOT / "conf/base/parameters_training.yml").read_text())["training"]
    cloud = yaml.safe_load((ROOT / "conf/cloud/parameters.yml").read_text())
    training = merge(base, cloud["training"])
    training["patch_size_zyx"] = cloud["patching"]["patch_size_zyx"]
    return training


def simulated_patches(count: int, patch: tuple[int, int, int], seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(single view, fused)`` float32 patch pairs, normalised to about [0, 1]."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    depth_profile = np.exp(-np.arange(patch[0], dtype=np.float32) / (2.0 * patch[0]))[:, None, None]
    pairs = []
    for _ in range(count):
        field = np.zeros(patch, np.float32)
        centres = tuple(rng.integers(0, n, max(4, int(np.prod(patch) // 20000))) for n in patch)
        field[centres] = rng.uniform(0.5, 1.0, len(centres[0]))
        fused = gaussian_filter(field, (1.0, 2.0, 2.0))
        fused /= max(float(fused.max()), 1e-6)
        view = gaussian_filter(fused, (2.5, 1.0, 1.0)) * depth_profile
        view = view + rng.normal(0, 0.03, patch).astype(np.float32)
        pairs.append((view.astype(np.float32), fused.astype(np.float32)))
    return pairs


def write_store(directory: Path, pairs: list, patch: tuple[int, int, int]) -> Path:
    """A patch store of ``pairs`` (as the patching pipeline writes)."""
    import pandas as pd

    from fusemycell.patching.store import write_patch_store

    index = pd.DataFrame(
        {
            "pair": "image_0_nucleus",
            "origin_z": 0,
            "origin_y": range(len(pairs)),
            "origin_x": 0,
            "spacing_z_um": SPACING_ZYX[0],
            "spacing_y_um": SPACING_ZYX[1],
            "spacing_x_um": SPACING_ZYX[2],
        }
    )
    rows = [(i, view, fused) for i, (view, fused) in enumerate(pairs)]
    return write_patch_store(directory, index, patch, "float16", rows)


def train_briefly(args: argparse.Namespace, workdir: Path, device: str) -> tuple[object, dict]:
    """Train the cloud (or, with ``--smoke``, a tiny) model for ``args.train_seconds``; the model and a summary."""
    from fusemycell.models.model_file import load_model
    from fusemycell.training.config import TrainingConfig
    from fusemycell.training.engine import BEST_MODEL, train

    parameters = cloud_training_parameters()
    patch = tuple(parameters.pop("patch_size_zyx"))
    parameters.update(devices=1, device=device, epochs=1000, early_stopping_patience=0, num_workers=0)
    parameters["checkpoint_dir"] = str(workdir / "checkpoints")
    counts = (128, 16)
    if args.smoke:
        patch, counts = (16, 32, 32), (16, 4)
        parameters["model"] = {**parameters["model"], "depth": 2, "base_channels": 4, "max_channels": 8}
        parameters["batch_size"] = 2
        parameters["patches_per_epoch"] = 32  # the cloud's 4096 per epoch would take minutes on a CPU
    parameters.pop("amp_dtype", None) if device == "cpu" else None
    parameters["monitor"] = "val_nssim"  # synthetic patch stores, no whole volumes
    config = TrainingConfig.model_validate(parameters)
    stores = [
        write_store(workdir / name, simulated_patches(count, patch, seed), patch)
        for name, count, seed in (("train", counts[0], 0), ("val", counts[1], 1))
    ]
    epochs: list[float] = []
    started = time.perf_counter()

    def stop_when_time_is_up(metrics: object) -> None:
        epochs.append(float(metrics.epoch_time_s))  # type: ignore[attr-defined]
        if time.perf_counter() - started >= args.train_seconds:
            raise _TimeUp

    try:
        result = train(config, *stores, epoch_callback=stop_when_time_is_up)  # the card: config.model at the patches
        model = result.model
    except _TimeUp:
        model = load_model(Path(parameters["checkpoint_dir"]) / BEST_MODEL)
    summary = {
        "train_patches": counts[0],
        "patch_zyx": list(patch),
        "epochs": len(epochs),
        "train_seconds": time.perf_counter() - started,
        "median_epoch_seconds": float(np.median(epochs)) if epochs else None,
        "val_nssim": model.card.validation.val_nssim if model.card.validation else None,  # type: ignore[attr-defined]
    }
    return model, summary


class StudyPlanes:
    """A uint16 study made plane by plane (the input file is written without holding it)."""

    def __init__(self, depth: int, side: int):
        self.shape, self.dtype, self.ndim = (depth, side, side), np.dtype(np.uint16), 3
        yy, xx = np.ogrid[:side, :side]
        self._base = 2000 * np.exp(
            -(((yy - side * 0.4) / (side * 0.2)) ** 2 + ((xx - side * 0.5) / (side * 0.25)) ** 2)
        )
        self._base = self._base.astype(np.float32)

    def __getitem__(self, z: int) -> np.ndarray:
        rng = np.random.default_rng(int(z))
        plane = self._base * np.float32(0.6 + 0.4 * np.sin(z / 9.0) ** 2) + 100
        plane += rng.normal(0, 30, self.shape[1:]).astype(np.float32)
        return np.clip(plane, 0, 65535).astype(np.uint16)


def batch_size_for(backend: object, tile: tuple[int, int, int], requested: int, *, limit: int = 64) -> int:
    """Tiles per call for the backend's device: on CUDA as many as 60% of the free memory holds, else ``requested``.

    The memory of one tile is measured with a probe forward pass of two tiles.
    """
    import torch

    device, network = backend.device, backend.network  # type: ignore[attr-defined]
    if device.type != "cuda":
        return int(requested)
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    channels = int(getattr(getattr(network, "config", None), "in_channels", 1))
    probe = torch.zeros((2, channels, *(int(t) for t in tile)), device=device)
    with torch.inference_mode(), backend.precision.autocast(device):  # type: ignore[attr-defined]
        network(probe)
    per_tile = max(1, (torch.cuda.max_memory_allocated(device) - before) // 2)
    del probe
    torch.cuda.empty_cache()
    free, _ = torch.cuda.mem_get_info(device)
    return int(max(1, min(limit, 0.6 * free // per_tile)))


def predict_study(args: argparse.Namespace, model: object, workdir: Path, device: str) -> dict:
    """Write the study, predict it file to file; timings and memory."""
    import torch

    from fusemycell.inference.apply import InferenceSettings, predict_file
    from fusemycell.inference.backends import TorchBackend
    from fusemycell.io.formats import read_volume
    from fusemycell.io.tiff import save_volume, write_volume

    side = 256 if args.smoke else 1920
    depth = 24 if args.smoke else args.depth
    source, target = workdir / "study_angle.tif", workdir / "prediction" / "study_angle.tif"
    start = time.perf_counter()
    write_volume(source, StudyPlanes(depth, side), SPACING_ZYX)
    write_seconds = time.perf_counter() - start
    card = model.card  # type: ignore[attr-defined]
    backend = TorchBackend(model.network, device, amp=True)  # type: ignore[attr-defined]
    if card.tile_invariant:  # exact tiling: tiles planned from the device's free memory and memory_gb on the host
        settings = InferenceSettings(device=device, amp=True, memory_gb=args.memory_gb)
    else:  # blended tiles of the training patch doubled in y and x, as before exact tiling
        patch = card.patch_size_zyx
        tile = (patch[0], 2 * patch[1], 2 * patch[2])
        batch = batch_size_for(backend, tile, requested=4, limit=args.max_batch)
        settings = InferenceSettings(device=device, amp=True, batch_size=batch, tile_zyx=tile, tiling="blend")
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    host_before = peak_rss_kib()
    start = time.perf_counter()
    volume = predict_file(str(source), backend, settings, card)
    save_volume(target, volume)
    seconds = time.perf_counter() - start
    written = read_volume(target, lazy=True)
    shape = tuple(written.shape)
    written.data.close()
    stream = volume.data
    while not hasattr(stream, "grid"):
        stream = stream.inner
    grid = stream.grid
    tiles, tile = len(grid), grid.tile
    evaluations = (
        grid.evaluations_per_voxel()
        if hasattr(grid, "evaluations_per_voxel")
        else tiles * float(np.prod(tile)) / float(np.prod(grid.shape))
    )
    batch = stream.batch_size
    return {
        "study_zyx": [depth, side, side],
        "input_gib": source.stat().st_size / 2**30,
        "input_write_seconds": write_seconds,
        "output_ok": shape == (depth, side, side),
        "tiling": "exact" if card.tile_invariant else "blend",
        "tile_zyx": list(tile),
        "tiles": tiles,
        "evaluations_per_voxel": evaluations,
        "batch_size": batch,
        "precision": str(backend.precision.dtype) if backend.precision.enabled else "float32",
        "seconds_per_volume": seconds,
        "tiles_per_second": tiles / seconds,
        "peak_host_mib": peak_rss_kib() / 1024,
        "host_mib_before_prediction": host_before / 1024,
        "peak_device_mib": torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None,
    }


#: The target on one H100/H200: the 300x1920x1920 study file to file in at most this many seconds.
TARGET_S = 120.0


def run(args: argparse.Namespace) -> dict:
    """Train, predict: the result."""
    if args.smoke:
        args.train_seconds = min(args.train_seconds, 10.0)

    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    name = torch.cuda.get_device_name(0) if device == "cuda" else "CPU (no CUDA: fallback path, not a GPU check)"
    print(f"device: {name}; torch {torch.__version__}; smoke: {args.smoke}", file=sys.stderr, flush=True)
    with harness.scratch_folder(args.workdir, "gpu_check_") as workdir:
        model, training = train_briefly(args, workdir, device)
        print(f"training: {training}", file=sys.stderr, flush=True)
        prediction = predict_study(args, model, workdir, device)
    return {
        "device": name,
        "smoke": args.smoke,
        "training": training,
        "prediction": prediction,
        "failures": [] if prediction["output_ok"] else ["the output file is malformed"],
    }


def report(results: dict) -> None:
    """The Markdown of a result."""
    training, p = results["training"], results["prediction"]
    print(
        f"### GPU check on {results['device']}"
        + (" (smoke sizes: checks the script, not the GPU)" if results["smoke"] else "")
        + "\n"
    )
    device_mib = "-" if p["peak_device_mib"] is None else f"{p['peak_device_mib']:.0f}"
    print(
        f"- training: {training['epochs']} epochs of {training['train_patches']} patches "
        f"{'x'.join(map(str, training['patch_zyx']))} in {training['train_seconds']:.0f} s "
        f"(median epoch {training['median_epoch_seconds']:.1f} s), validation N_SSIM {training['val_nssim']:.4f}"
    )
    print(
        f"- prediction: {'x'.join(map(str, p['study_zyx']))} uint16 ({p['input_gib']:.2f} GiB) file to file in "
        f"**{p['seconds_per_volume']:.1f} s**; {p['tiling']} tiling, {p['tiles']} tiles "
        f"{'x'.join(map(str, p['tile_zyx']))} ({p['evaluations_per_voxel']:.2f} evaluations per voxel), "
        f"{p['tiles_per_second']:.1f} tiles/s, batch {p['batch_size']}, {p['precision']}; "
        f"peak host {p['peak_host_mib']:.0f} MiB (before prediction {p['host_mib_before_prediction']:.0f}), "
        f"peak device {device_mib} MiB; output {'ok' if p['output_ok'] else 'MALFORMED'}"
    )
    if results["device"].startswith("CPU") or results["smoke"]:
        print(f"- target (the study in at most {TARGET_S:.0f} s on one GPU): not checked by this run")
    else:
        verdict = "met" if p["seconds_per_volume"] <= TARGET_S else "not met"
        print(f"- target: the study in at most {TARGET_S:.0f} s: **{verdict}**")
    print()
    harness.print_lines(harness.provenance(results))


def smoke_out(args: argparse.Namespace) -> None:
    """A smoke run's result goes to a temporary file unless ``--out`` says otherwise: it is not a measurement."""
    if args.smoke and args.out is None and args.report is None:
        args.out = Path(tempfile.gettempdir()) / "gpu-check-smoke.json"


def main(argv: list[str] | None = None) -> int:
    """Train, predict; write the result (``benchmarks/results/gpu-check-DATE.json``) and print it."""
    parser = harness.parser(__doc__)
    parser.add_argument("--train-seconds", type=float, default=150.0, help="training budget (default 150)")
    parser.add_argument("--depth", type=int, default=300, help="planes of the 1920x1920 study (default 300)")
    parser.add_argument("--max-batch", type=int, default=16, help="largest inference batch (default 16)")
    parser.add_argument("--memory-gb", type=float, default=8.0, help="host memory for exact tiling (default 8)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, any device: checks the script only")
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temporary folder, deleted")
    return harness.main(__file__, argv, parser, run, report, child=smoke_out)


if __name__ == "__main__":
    sys.exit(main())
