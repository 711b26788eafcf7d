"""Benchmark: training the ``mac`` configuration on CPU, with and without the physics-informed loss.

The script trains the project's U-Net on the patch stores of a Kedro
environment (default ``mac``: patches of 16x64x64, a depth-3 U-Net with 8 base
channels, batch 2 with 4-step gradient accumulation, 6 epochs) twice, with the
same data and the same seed:

``physics off``
    ``training.physics.enabled: false`` (the image loss only: L1 + 0.2 (1 - SSIM));
``physics on``
    ``training.physics.enabled: true`` with the configured weight (default 0.1):
    the forward model ``A`` is first fitted on training pairs
    (``A(fused) ~ angle``), then ``|A(prediction) - input|`` is added to the
    loss and ``A``'s five parameters are learned with the network.

Each variant runs :func:`fusemycell.training.engine.train` in a fresh Python
process, so that the peak resident memory of one does not hide that of the
other, with its own temporary checkpoint folder (deleted afterwards). The
parameters are loaded the way Kedro loads them (``OmegaConfigLoader`` over
``conf/base`` and ``conf/<env>``, soft merge of ``parameters``); only
``device`` (``--device``, default ``cpu``), ``checkpoint_dir``,
``physics.enabled`` and, when given, ``epochs`` and ``seed`` are changed.

Reported per variant: epochs, wall time of the whole ``train`` call and the
part of it outside the epochs (model set-up, the forward-model fit,
checkpoint writes), the median over epochs of the engine's training
throughput (patches/s and voxels/s, training batches only), the peak resident
memory (``VmHWM`` of the process image, and above its value after imports and
configuration loading; ``ru_maxrss`` is not used: after ``fork`` + ``exec``
it carries the parent's peak), and at the best epoch (highest validation
N_SSIM, as the engine picks it) the validation SSIM of the prediction, that of
the input, and the challenge's
``N_SSIM = (SSIM(pred, gt) - SSIM(input, gt)) / (1 - SSIM(input, gt))``. For
physics on it also prints the fitted forward-model parameters, beside the
values the simulation used (which measures depths in tissue, not from the
volume's edge as the forward model does).

If ``data/05_model_input/patches/train/store.json`` or its ``val`` sibling is
missing or holds another patch size than the environment's, the stores are
made first with ``kedro run --pipelines simulation,preprocessing,patching
--env <env>`` (about a minute for ``mac``).

Both runs must see the same source, parameters and patch stores: the script
hashes them (SHA-256) before and after each run, and exits with status 1 if
anything changed or the two configurations differ in more than
``physics.enabled``. The Markdown report goes to stdout, progress (the
engine's log) to stderr.

Usage::

    python benchmarks/training.py [--epochs N] [--seed S] [--env mac] [--device cpu]
    python benchmarks/training.py --report benchmarks/results/training-DATE.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import harness
import numpy as np
from _measure import peak_rss_kib, run_measurement

#: The project root (the script lives in ``benchmarks/``).
ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("off", "on")
STORES = ROOT / "data" / "05_model_input" / "patches"
#: Forward-model parameters as the simulation's ``angle`` parameters name them (see ``conf/base``).
SIMULATION_KEYS = {
    "illumination_attenuation_um": ("illumination_attenuation_length_um", 1.0),
    "detection_attenuation_um": ("detection_attenuation_length_um", 1.0),
    "blur_growth_per_um": ("detection_blur_growth_um_per_100um", 0.01),
}


# -- configuration ------------------------------------------------------------------------------
def load_parameters(env: str) -> dict:
    """The parameters of ``env`` merged over ``conf/base`` the way the Kedro project loads them."""
    os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")
    from kedro.config import OmegaConfigLoader

    from fusemycell import settings  # noqa: F401 - registers the project's resolvers, as a Kedro session does

    loader = OmegaConfigLoader(
        conf_source=str(ROOT / "conf"),
        env=env,
        base_env="base",
        default_run_env="local",
        merge_strategy={"parameters": "soft"},
        config_patterns={"mlflow": ["mlflow*"]},
    )
    return loader["parameters"]


def stores_ready(patch_size: object) -> str | None:
    """Why the patch stores must be made again, or ``None`` when both exist with ``patch_size``."""
    for split in ("train", "val"):
        manifest = STORES / split / "store.json"
        if not manifest.exists():
            return f"{manifest} is missing"
        found = json.loads(manifest.read_text()).get("patch_size_zyx")
        if patch_size != "auto" and list(found) != list(patch_size):
            return f"{manifest} holds patches of {found}, the environment asks for {list(patch_size)}"
    return None


def prepare_stores(env: str) -> None:
    """Make the patch stores of ``env`` when they are missing or have another patch size."""
    from fusemycell.patching.config import PatchingConfig

    patch_size = PatchingConfig.model_validate(load_parameters(env)["patching"]).patch_size_zyx
    reason = stores_ready(patch_size)
    if reason is None:
        return
    command = [sys.executable, "-m", "kedro", "run", "--pipelines", "simulation,preprocessing,patching", "--env", env]
    print(f"{reason}: running {' '.join(command[1:])}", file=sys.stderr)
    start = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True, env={**os.environ, "KEDRO_DISABLE_TELEMETRY": "1"})
    print(f"  {time.perf_counter() - start:.0f} s", file=sys.stderr)
    reason = stores_ready(patch_size)
    if reason is not None:
        raise RuntimeError(f"the patching pipeline ran but {reason}")


def inputs_digest(env: str) -> dict[str, str]:
    """SHA-256 of what a training run depends on: the package's source, the parameters, the patch stores.

    The two variants must see the same three; a mismatch means something
    changed them between (or during) the runs and the comparison is void.
    """
    import hashlib

    groups = {
        "source": sorted((ROOT / "src" / "fusemycell").rglob("*.py")),
        "parameters": sorted((ROOT / "conf" / "base").glob("*.yml")) + sorted((ROOT / "conf" / env).glob("*.yml")),
        "data": sorted(path for path in STORES.rglob("*") if path.is_file()),
    }
    digests = {}
    for name, paths in groups.items():
        digest = hashlib.sha256()
        for path in paths:
            digest.update(str(path.relative_to(ROOT)).encode())
            with path.open("rb") as handle:
                while chunk := handle.read(1 << 22):
                    digest.update(chunk)
        digests[name] = digest.hexdigest()
    return digests


# -- measurement (runs in a fresh child process) ------------------------------------------------


def measure(variant: str, args: argparse.Namespace) -> dict[str, object]:
    """Train one variant and return its history, timings and memory.

    Meant to run in a process of its own: the peak RSS it reports is that of
    the whole process, with the baseline (after imports and loading the
    parameters, before training) given separately.

    Parameters
    ----------
    variant
        ``"off"`` or ``"on"``: the physics-informed consistency term.
    args
        The command line: environment, device, epochs and seed overrides.

    Returns
    -------
    dict
        ``history`` (the engine's ``EpochMetrics`` as dicts), ``best_epoch``,
        ``stopped_early``, ``physics`` (fitted parameters; empty when off),
        ``seconds`` (the ``train`` call), ``baseline_kib``, ``peak_kib``,
        ``torch_threads``, ``torch`` (version) and the configuration used.
    """
    import logging
    import signal

    import torch

    from fusemycell.patching.config import PatchingConfig
    from fusemycell.training.config import TrainingConfig
    from fusemycell.training.engine import train

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format=f"  [{variant}] %(message)s")
    params = load_parameters(args.env)
    config = TrainingConfig.model_validate({**params["training"], "monitor": "val_nssim"})  # stores only
    augmentation = PatchingConfig.model_validate(params["patching"]).augmentation
    checkpoint_dir = Path(tempfile.mkdtemp(prefix=f"training_{variant}_"))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a killed run still deletes its checkpoints
    update: dict[str, object] = {
        "device": args.device,
        "checkpoint_dir": str(checkpoint_dir),
        "physics": config.physics.model_copy(update={"enabled": variant == "on"}),
    }
    if args.epochs is not None:
        update["epochs"] = args.epochs
    if args.seed is not None:
        update["seed"] = args.seed
    config = config.model_copy(update=update)
    digests = inputs_digest(args.env)
    baseline = peak_rss_kib()
    try:
        start = time.perf_counter()
        result = train(config, STORES / "train", STORES / "val", augmentation=augmentation, epoch_callback=None)
        seconds = time.perf_counter() - start
    finally:
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
    return {
        "history": [asdict(h) for h in result.history],
        "best_epoch": result.best_epoch,
        "stopped_early": result.stopped_early,
        "physics": result.physics,
        "physics_initial": {
            "illumination_attenuation_um": config.physics.illumination_attenuation_um,
            "detection_attenuation_um": config.physics.detection_attenuation_um,
            "blur_growth_per_um": config.physics.blur_growth_per_um,
            "gain": 1.0,
            "offset": 0.0,
        },
        "simulation": params.get("simulation", {}).get("angle", {}),
        "seconds": seconds,
        "baseline_kib": baseline,
        "peak_kib": peak_rss_kib(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "config": config.model_dump(mode="json", exclude={"checkpoint_dir"}),
        "digests": digests,
        "digests_after": inputs_digest(args.env),
    }


def run_child(variant: str, args: argparse.Namespace) -> dict[str, object]:
    """Run :func:`measure` in a fresh interpreter (this script in ``--measure`` mode); its log goes to stderr."""
    arguments = ["--measure", variant, "--env", args.env, "--device", args.device]
    if args.epochs is not None:
        arguments += ["--epochs", str(args.epochs)]
    if args.seed is not None:
        arguments += ["--seed", str(args.seed)]
    return run_measurement(
        __file__,
        arguments,
        f"training with physics {variant}",
        show_log=True,
        cwd=ROOT,
        env={**os.environ, "KEDRO_DISABLE_TELEMETRY": "1"},
    )


# -- report -------------------------------------------------------------------------------------
def best(result: dict) -> dict:
    """The history entry of the best epoch."""
    return next(h for h in result["history"] if h["epoch"] == result["best_epoch"])


def summary_table(results: dict[str, dict]) -> str:
    """One row per variant: time, throughput, memory, validation quality at the best epoch."""
    lines = [
        "| physics | epochs | train() wall (s) | outside epochs (s) | epoch (s, median) | patches/s (median) "
        "| voxels/s (median) | peak RSS (MiB) | above baseline (MiB) | engine peak RSS (MB) | best epoch "
        "| val SSIM | input SSIM | val N_SSIM |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for variant, result in results.items():
        history = result["history"]
        epoch_s = [h["epoch_time_s"] for h in history]
        top = best(result)
        lines.append(
            f"| {variant} | {len(history)} | {result['seconds']:.1f} | {result['seconds'] - sum(epoch_s):.1f} "
            f"| {np.median(epoch_s):.1f} | {np.median([h['patches_per_s'] for h in history]):.1f} "
            f"| {np.median([h['voxels_per_s'] for h in history]) / 1e6:.2f} M "
            f"| {result['peak_kib'] / 1024:.0f} | {(result['peak_kib'] - result['baseline_kib']) / 1024:.0f} "
            f"| {max(h['peak_rss_mb'] for h in history):.0f} | {result['best_epoch']} "
            f"| {top['val_ssim']:.4f} | {top['val_ssim_input']:.4f} | **{top['val_nssim']:.4f}** |"
        )
    return "\n".join(lines)


def epoch_table(results: dict[str, dict]) -> str:
    """Losses and validation N_SSIM epoch by epoch, both variants side by side."""
    lines = [
        "| epoch | off: train loss | off: val loss | off: val N_SSIM | on: train loss | on: val loss "
        "| on: consistency | on: val N_SSIM | on - off N_SSIM |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    off, on = results["off"]["history"], results["on"]["history"]
    for a, b in zip(off, on):
        lines.append(
            f"| {a['epoch']} | {a['train_loss']:.4f} | {a['val_loss']:.4f} | {a['val_nssim']:.4f} "
            f"| {b['train_loss']:.4f} | {b['val_loss']:.4f} | {b['train_consistency']:.4f} "
            f"| {b['val_nssim']:.4f} | {b['val_nssim'] - a['val_nssim']:+.4f} |"
        )
    return "\n".join(lines)


def physics_table(result: dict) -> str:
    """The forward model's parameters: initial, after training, and the simulation's values."""
    simulation = result["simulation"]
    lines = ["| parameter | initial | fitted + learned | simulation |", "|---|---:|---:|---:|"]
    for name, value in result["physics"].items():
        key, factor = SIMULATION_KEYS.get(name, (None, 1.0))
        reference = f"{simulation[key] * factor:.3g}" if key in simulation else "-"
        lines.append(
            f"| {name} | {result['physics_initial'].get(name, float('nan')):.3g} | {value:.4g} | {reference} |"
        )
    return "\n".join(lines)


# -- main ---------------------------------------------------------------------------------------
def parse_args() -> argparse.ArgumentParser:
    """The command line (``--measure`` is internal)."""
    parser = harness.parser(__doc__)
    parser.add_argument("--epochs", type=int, default=None, help="epochs (default: the environment's value)")
    parser.add_argument("--seed", type=int, default=None, help="training seed (default: the environment's value)")
    parser.add_argument("--env", default="mac", help="Kedro environment of the parameters (default mac)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "auto", "cuda", "mps"), help="default cpu")
    parser.add_argument("--measure", choices=VARIANTS, help=argparse.SUPPRESS)
    return parser


def benchmark(args: argparse.Namespace) -> dict:
    """Make the stores if needed, train both variants: the result (both runs, the stores, the failures)."""
    from fusemycell.patching.store import PatchStore

    if args.epochs is not None and args.epochs <= 0:
        raise SystemExit("--epochs must be positive")
    prepare_stores(args.env)
    train_store, val_store = PatchStore(STORES / "train"), PatchStore(STORES / "val")
    results = {}
    for variant in VARIANTS:
        print(f"training with physics {variant}", file=sys.stderr)
        results[variant] = run_child(variant, args)
        print(f"  {results[variant]['seconds']:.0f} s", file=sys.stderr)
    return {
        "stores": {
            "train": len(train_store),
            "val": len(val_store),
            "patch_zyx": list(train_store.patch_size_zyx),
            "dtype": str(train_store.description["dtype"]),
        },
        "variants": results,
        "failures": comparability(results),
    }


def report(stored: dict) -> None:
    """The Markdown of a result; physics ``off`` (the image loss only) is the reference."""
    results, stores = stored["variants"], stored["stores"]
    config = results["off"]["config"]
    model = config["model"]
    patch = "x".join(map(str, stores["patch_zyx"]))
    print(
        f"### Training, `{stored['parameters']['env']}` configuration on {config['device']}: {stores['train']} "
        f"training and {stores['val']} validation patches of {patch} ({stores['dtype']}), "
        f"U-Net depth {model['depth']} / {model['base_channels']} base channels, batch {config['batch_size']} "
        f"x {config['accumulation_steps']} accumulation steps, {config['epochs']} epochs, seed {config['seed']}\n"
    )
    loss = ", ".join(f"{k} {v:g}" for k, v in config["loss"].items())
    physics = results["on"]["config"]["physics"]
    print(
        f"Loss: {loss}; physics on: weight {physics['weight']:g}, fit_steps {physics['fit_steps']}, "
        f"learn {physics['learn']}; learning rate {config['learning_rate']:g}.\n"
    )
    print(summary_table(results))
    print(
        "\nThroughput is the engine's: training patches (and voxels) per second of the training batches of an "
        "epoch, validation excluded; median over epochs. Peak RSS is VmHWM of the training process; baseline is "
        "its VmHWM after imports and loading the parameters. Validation figures are at the best epoch."
    )
    print("\nEpoch by epoch:\n")
    print(epoch_table(results))
    on = results["on"]
    print(f"\nForward model with physics on (weight {physics['weight']:g}):\n")
    print(physics_table(on))
    difference = best(on)["val_nssim"] - best(results["off"])["val_nssim"]
    print(f"\nBest-epoch validation N_SSIM, physics on - off: {difference:+.4f}.")
    if stored["failures"]:
        print("\nFAILED, the two runs are not comparable:\n" + "\n".join(f"- {f}" for f in stored["failures"]))
    else:
        print("Both runs used the same source, parameters and patch stores (SHA-256 before and after each run).")
    print()
    harness.print_lines(harness.provenance(stored))


def comparability(results: dict[str, dict]) -> list[str]:
    """Why the variants' results cannot be compared (empty when they can).

    Both runs must have the same configuration except ``physics.enabled``, and
    the same source, parameters and data before and after training.
    """
    failures = []
    configs = []
    for result in results.values():
        config = json.loads(json.dumps(result["config"]))
        config["physics"].pop("enabled")
        configs.append(config)
    if configs[0] != configs[1]:
        changed = sorted(key for key in configs[0] if configs[0][key] != configs[1].get(key))
        failures.append(f"the training configurations differ in {', '.join(changed)}")
    first = results["off"]["digests"]
    for variant, result in results.items():
        for when in ("digests", "digests_after"):
            changed = [name for name, value in result[when].items() if value != first[name]]
            if changed:
                moment = "after" if when == "digests_after" else "before"
                failures.append(f"physics {variant}, {moment} training: {', '.join(changed)} changed")
    return failures


def measure_child(args: argparse.Namespace) -> int | None:
    if not args.measure:
        return None
    print(json.dumps(measure(args.measure, args)))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (result in ``benchmarks/results/``), or one training run with ``--measure``."""
    return harness.main(__file__, argv, parse_args(), benchmark, report, child=measure_child)


if __name__ == "__main__":
    sys.exit(main())
