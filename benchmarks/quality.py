"""Benchmark: test N_SSIM of the main job's chain, per channel and per volume, with an ablation.

For every seed (``--seeds``, default 2025 2026) the script makes a throw-away
copy of the project (config and project metadata, as ``tests/conftest.py``'s
``copy_project`` does; each copy holds its own data and its own sqlite MLflow
store) and runs the main job's chain in it with ``kedro run`` subprocesses in
the Kedro environment ``--env`` (default ``mac``):

1. once per seed, the part every row shares: ``--pipelines
   simulation,preprocessing`` (the embedded simulated data and its split; the
   same data for every seed, so that rows and seeds are paired comparisons);
2. for every ablation row (``ROWS`` below, cumulative; ``--rows`` picks some),
   ``--pipelines patching,training,evaluation`` with the row's ``--params``
   overrides plus ``training.seed`` and ``patching.seed`` set to the seed.

After each row it reads the evaluation's per-volume table
(``data/08_reporting/evaluation/per_volume.csv``: columns ``pair``, ``channel``,
``study``, ``method`` in ``model`` / ``identity`` / ``gaussian_blur``, and
``n_ssim``) and, where it can, the trained model's card
(``data/06_models/fusemycell_unet.pt``: best epoch, validation N_SSIM, the
guard's correction scale). The outputs of the previous row (patch stores,
models, predictions, evaluation) are deleted before each row, so a row can
only read its own.

The Markdown report goes to stdout (progress to stderr): per row and seed the
test N_SSIM per channel (mean over the channel's test volumes), their mean, the
smallest margin over volumes of ``model - max(identity, blur)`` and the wall
time of the row; per row the mean over seeds; the baselines (identity, blur);
and per test volume the baselines and every row's model (mean over seeds).
``--out FILE`` writes everything as JSON; ``--report FILE`` prints the tables
again from such a file without running anything.

The exit status is 1 if any ``kedro run`` failed (the tail of its stderr is
printed, naming the row and the seed; the other rows still run).

Usage::

    python benchmarks/quality.py [--env mac] [--seeds 2025 2026] [--rows budget +position ...]
        [--params KEY=VALUE,...] [--workdir DIR] [--out results.json]
    python benchmarks/quality.py --report results.json
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import _measure

#: The project root (the script lives in ``benchmarks/``).
ROOT = Path(__file__).resolve().parents[1]

#: The ablation, cumulative: row name -> ``kedro run --params`` overrides (besides the seeds).
#: Adjust the strings here when a parameter's name or value changes.
ROWS: dict[str, str] = {
    "budget": (
        "patching.position.enabled=false,training.monitor=val_nssim,training.guard=false,training.physics.enabled=false"
    ),
    "+position": (
        "patching.position.enabled=true,training.monitor=val_nssim,training.guard=false,training.physics.enabled=false"
    ),
    "+volume_selection": (
        "patching.position.enabled=true,training.monitor=val_volume_nssim,"
        "training.guard=false,training.physics.enabled=false"
    ),
    "+guard": (  # the default configuration
        "patching.position.enabled=true,training.monitor=val_volume_nssim,"
        "training.guard=true,training.physics.enabled=false"
    ),
    "+physics": (
        "patching.position.enabled=true,training.monitor=val_volume_nssim,"
        "training.guard=true,training.physics.enabled=true"
    ),
    # not in the cumulative chain (run them with --rows): what the position channels bring with the rest on
    "+guard-position": (
        "patching.position.enabled=false,training.monitor=val_volume_nssim,"
        "training.guard=true,training.physics.enabled=false"
    ),
}
#: The cumulative chain, run by default.
CUMULATIVE = ("budget", "+position", "+volume_selection", "+guard", "+physics")

SHARED_PIPELINES = "simulation,preprocessing"
ROW_PIPELINES = "patching,training,evaluation"
#: What a row writes: emptied before each row so that stale results cannot be read.
ROW_OUTPUTS = ("data/05_model_input", "data/06_models", "data/07_model_output", "data/08_reporting/evaluation")
SPLIT = "data/02_intermediate/split.csv"
PER_VOLUME = "data/08_reporting/evaluation/per_volume.csv"
REPORT = "data/08_reporting/evaluation/report.json"
MODEL = "data/06_models/fusemycell_unet.pt"
#: ``method`` values of the per-volume table.
MODEL_METHOD, IDENTITY, BLUR = "model", "identity", "gaussian_blur"
TAIL_LINES = 40


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="mac", help="Kedro environment (default mac; test = tiny data, seconds)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[2025, 2026], help="training and patching seeds")
    parser.add_argument("--rows", nargs="+", default=list(CUMULATIVE), help=f"ablation rows, of: {' '.join(ROWS)}")
    parser.add_argument("--params", default="", help="extra kedro --params for every row (KEY=VALUE,...)")
    parser.add_argument("--workdir", type=Path, default=None, help="kept project copies (default: temporary)")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    parser.add_argument("--report", type=Path, default=None, help="print the tables of a JSON file and stop")
    args = parser.parse_args(argv)
    unknown = [row for row in args.rows if row not in ROWS]
    if unknown:
        parser.error(f"unknown rows {unknown}; known: {list(ROWS)}")
    return args


# -- project copies and kedro runs -------------------------------------------------------------
def copy_project(destination: Path) -> Path:
    """Copy what a Kedro run needs (config, project metadata) into ``destination`` (as ``tests/conftest.py``)."""
    destination.mkdir(parents=True, exist_ok=True)
    shutil.copytree(ROOT / "conf", destination / "conf", ignore=shutil.ignore_patterns("local"))
    (destination / "conf" / "local").mkdir(exist_ok=True)
    for name in ("pyproject.toml", ".telemetry"):
        if (ROOT / name).exists():
            shutil.copy(ROOT / name, destination / name)
    (destination / "src").mkdir(exist_ok=True)  # Kedro wants it; the package is imported from ROOT/src
    for layer in sorted(p.name for p in (ROOT / "data").iterdir() if p.is_dir()):
        (destination / "data" / layer).mkdir(parents=True, exist_ok=True)
    return destination


def child_environment() -> dict[str, str]:
    """The environment of the ``kedro run`` children: this checkout's package first, no telemetry."""
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)  # each copy tracks to its own sqlite:///mlflow.db (conf/base)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH", "")) if p)
    return env


def kedro_run(project: Path, env: str, pipelines: str, params: str, log_name: str) -> tuple[float, str | None]:
    """Run ``kedro run`` in ``project``; return its wall time and, if it failed, the tail of its log."""
    command = [sys.executable, "-m", "kedro", "run", "--env", env, "--pipelines", pipelines]
    if params:
        command += ["--params", params]
    logs = project / "logs"
    logs.mkdir(exist_ok=True)
    out_path, err_path = logs / f"{log_name}.stdout", logs / f"{log_name}.stderr"
    print(f"  $ {' '.join(command)}", file=sys.stderr, flush=True)
    start = time.perf_counter()
    with out_path.open("w") as out, err_path.open("w") as err:
        result = subprocess.run(command, cwd=project, env=child_environment(), stdout=out, stderr=err, check=False)
    elapsed = time.perf_counter() - start
    if result.returncode == 0:
        return elapsed, None
    text = err_path.read_text(errors="replace").strip() or out_path.read_text(errors="replace").strip()
    tail = "\n".join(text.splitlines()[-TAIL_LINES:])
    return elapsed, f"exit status {result.returncode}; last lines of {err_path}:\n{tail}"


def data_digest(project: Path) -> str:
    """SHA-256 of the split (pair, split, content digests of both files): equal = the seeds saw the same data."""
    with (project / SPLIT).open() as handle:
        rows = sorted((r["pair"], r["split"], r["angle_digest"], r["fused_digest"]) for r in csv.DictReader(handle))
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()[:16]


def clear_row_outputs(project: Path) -> None:
    """Empty the folders a row writes (keeping the folders themselves)."""
    for relative in ROW_OUTPUTS:
        folder = project / relative
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True, exist_ok=True)


def read_per_volume(project: Path) -> list[dict]:
    """The evaluation's per-volume rows: pair, channel, study, method, n_ssim."""
    with (project / PER_VOLUME).open() as handle:
        return [
            {key: row[key] for key in ("pair", "channel", "study", "method")} | {"n_ssim": float(row["n_ssim"])}
            for row in csv.DictReader(handle)
        ]


def read_card(project: Path) -> dict:
    """Best epoch, validation N_SSIM and the guard's scale from the trained model's card (empty if unreadable)."""
    try:
        from fusemycell.models.checkpoint import load_model

        card = load_model(project / MODEL).card
    except Exception as error:  # noqa: BLE001 (optional information)
        return {"error": f"{type(error).__name__}: {error}"}
    validation, guard = card.validation, getattr(card, "guard", None)
    return {
        "best_epoch": validation.epoch if validation else None,
        "val_nssim": validation.val_nssim if validation else None,
        "guard_scale": guard.scale if guard else None,
        "guard_val_nssim": dict(guard.val_nssim) if guard else None,
    }


def summarise(volumes: list[dict]) -> dict:
    """Per-channel mean test N_SSIM of every method, and the smallest margin of the model over the baselines."""
    methods = sorted({v["method"] for v in volumes})
    channels = sorted({v["channel"] for v in volumes})
    per_channel = {
        method: {
            channel: statistics.mean(v["n_ssim"] for v in volumes if v["method"] == method and v["channel"] == channel)
            for channel in channels
            if any(v["method"] == method and v["channel"] == channel for v in volumes)
        }
        for method in methods
    }
    by_pair: dict[str, dict[str, float]] = {}
    for v in volumes:
        by_pair.setdefault(v["pair"], {})[v["method"]] = v["n_ssim"]
    margins = {
        pair: scores[MODEL_METHOD] - max(scores[IDENTITY], scores[BLUR])
        for pair, scores in by_pair.items()
        if {MODEL_METHOD, IDENTITY, BLUR} <= scores.keys()
    }
    return {
        "per_channel": per_channel,
        "mean_over_channels": {m: statistics.mean(c.values()) for m, c in per_channel.items() if c},
        "margin_per_volume": margins,
        "min_margin": min(margins.values()) if margins else None,
    }


# -- the report ---------------------------------------------------------------------------------
def fmt(value: float | None, digits: int = 4) -> str:
    """A number for the table, ``-`` when missing."""
    return "-" if value is None else f"{value:.{digits}f}"


def mean_or_none(values: list[float | None]) -> float | None:
    """Mean of the values present, None if none."""
    present = [v for v in values if v is not None]
    return statistics.mean(present) if present else None


def tables(runs: list[dict], rows: list[str], channels: list[str]) -> None:
    """The per-row and per-volume tables."""
    header = " | ".join(channels)
    print(f"| row | seed | {header} | mean | min margin | best epoch | guard scale | time (s) |")
    print("|---|---|" + "---:|" * len(channels) + "---:|---:|---:|---:|---:|")
    for name in rows:
        mine = [r for r in runs if r["row"] == name]
        for run in mine:
            model = run["summary"]["per_channel"].get(MODEL_METHOD, {})
            card = run.get("card") or {}
            print(
                f"| {name} | {run['seed']} | "
                + " | ".join(fmt(model.get(c)) for c in channels)
                + f" | {fmt(run['summary']['mean_over_channels'].get(MODEL_METHOD))}"
                f" | {fmt(run['summary']['min_margin'])} | {card.get('best_epoch', '-') or '-'}"
                f" | {fmt(card.get('guard_scale'), 2)} | {run['seconds']:.0f} |"
            )
        if len(mine) > 1:
            means = [
                mean_or_none([r["summary"]["per_channel"].get(MODEL_METHOD, {}).get(c) for r in mine]) for c in channels
            ]
            overall = mean_or_none([r["summary"]["mean_over_channels"].get(MODEL_METHOD) for r in mine])
            margins = [r["summary"]["min_margin"] for r in mine if r["summary"]["min_margin"] is not None]
            print(
                f"| **{name}** | **mean** | "
                + " | ".join(f"**{fmt(m)}**" for m in means)
                + f" | **{fmt(overall)}** | {fmt(min(margins) if margins else None)} (min)"
                f" | | | {statistics.mean(r['seconds'] for r in mine):.0f} |"
            )
    for method, label in ((IDENTITY, "identity"), (BLUR, "blur")):
        values = {c: mean_or_none([r["summary"]["per_channel"].get(method, {}).get(c) for r in runs]) for c in channels}
        print(
            f"| {label} | all | "
            + " | ".join(fmt(values[c]) for c in channels)
            + f" | {fmt(mean_or_none([r['summary']['mean_over_channels'].get(method) for r in runs]))} | | | | |"
        )

    # per volume: baselines and every row's model, mean over seeds
    volumes: dict[str, dict] = {}
    for run in runs:
        for v in run["volumes"]:
            entry = volumes.setdefault(v["pair"], {"channel": v["channel"], "study": v["study"], "scores": {}})
            key = v["method"] if v["method"] != MODEL_METHOD else f"model {run['row']}"
            entry["scores"].setdefault(key, []).append(v["n_ssim"])
    print("\n### Per test volume (mean over seeds)\n")
    print("| volume | channel | study | identity | blur | " + " | ".join(rows) + " |")
    print("|---|---|---|---:|---:|" + "---:|" * len(rows))
    for pair in sorted(volumes):
        entry = volumes[pair]
        scores = entry["scores"]
        cells = [fmt(mean_or_none(scores.get(IDENTITY, []))), fmt(mean_or_none(scores.get(BLUR, [])))]
        cells += [fmt(mean_or_none(scores.get(f"model {name}", []))) for name in rows]
        print(f"| {pair} | {entry['channel']} | {entry['study']} | " + " | ".join(cells) + " |")


def report(results: dict) -> None:
    """Print the Markdown tables of ``results`` (what :func:`main` collects, or its JSON)."""
    runs = [r for r in results["runs"] if r.get("summary")]
    rows = [name for name in results["rows"] if any(r["row"] == name for r in runs)]
    seeds = results["seeds"]
    channels = sorted({c for r in runs for c in r["summary"]["per_channel"].get(MODEL_METHOD, {})})
    print(f"## Quality: test N_SSIM of the main job's chain, env `{results['env']}`, seeds {seeds}\n")
    shared = ", ".join(f"seed {s}: {t:.0f} s" for s, t in results["shared_seconds"].items())
    print(
        f"Date {results['date']}. Each row: `kedro run --pipelines {ROW_PIPELINES}` after a shared "
        f"`--pipelines {SHARED_PIPELINES}` per seed ({shared}). N_SSIM per channel = mean over that channel's "
        "test volumes; margin = min over test volumes of model - max(identity, blur)."
    )
    digests = set(results.get("data_digest", {}).values())
    if len(digests) > 1:
        print("**The seeds did not see the same data** (split digests differ): rows are not paired across seeds.")
    elif digests:
        print(f"Same data and split for every seed (digest {digests.pop()}).")
    print()
    for name in results["rows"]:
        print(f"- `{name}`: `{results['overrides'][name]}`")
    if results.get("extra_params"):
        print(f"- every row also: `{results['extra_params']}`")
    print()
    if runs:
        tables(runs, rows, channels)
    else:
        print("No run succeeded.")

    failed = [r for r in results["runs"] if r.get("error")]
    if failed:
        print("\nFailed runs: " + ", ".join(f"{r['row']} (seed {r['seed']})" for r in failed))
    print(f"\nTotal wall time: {results['total_seconds']:.0f} s\n\nMachine:\n")
    print("\n".join(results["machine"]))


def machine() -> list[str]:
    """The machine description of ``_measure``, with the versions that matter here."""
    from importlib.metadata import version

    versions = []
    for package in ("numpy", "torch", "kedro"):
        try:
            versions.append(f"{package} {version(package)}")
        except Exception:  # noqa: BLE001
            pass
    cpus = f"- CPUs: {os.cpu_count()} ({_measure.cpu_model()})"
    return _measure.machine_description(", ".join(versions), cpus=cpus)


def run_row(project: Path, args: argparse.Namespace, name: str, seed: int, keep: Path) -> dict:
    """One ablation row for one seed in ``project``; its results (copies of the reports kept in ``keep``)."""
    clear_row_outputs(project)
    seeds = f"training.seed={seed},patching.seed={seed}"
    params = ",".join(p for p in (ROWS[name], seeds, args.params) if p)
    print(f"seed {seed}, row {name}", file=sys.stderr, flush=True)
    seconds, error = kedro_run(project, args.env, ROW_PIPELINES, params, f"{name}_{seed}")
    run: dict = {"row": name, "seed": seed, "params": params, "seconds": seconds}
    if error:
        print(f"FAILED: row {name}, seed {seed}: {error}", file=sys.stderr)
        run["error"] = error
        return run
    keep.mkdir(parents=True, exist_ok=True)
    for relative in (PER_VOLUME, REPORT):
        if (project / relative).exists():
            shutil.copy(project / relative, keep / Path(relative).name)
    run["volumes"] = read_per_volume(project)
    run["summary"] = summarise(run["volumes"])
    run["card"] = read_card(project)
    model = run["summary"]["per_channel"].get(MODEL_METHOD, {})
    print(f"  {seconds:.0f} s, test N_SSIM {model}", file=sys.stderr, flush=True)
    return run


def main(argv: list[str] | None = None) -> int:
    """Run the shared part and every row for every seed; print the tables."""
    args = parse_args(argv)
    if args.report:
        report(json.loads(args.report.read_text()))
        return 0
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="quality_"))
    workdir.mkdir(parents=True, exist_ok=True)
    results: dict = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "env": args.env,
        "seeds": args.seeds,
        "rows": args.rows,
        "overrides": {name: ROWS[name] for name in args.rows},
        "extra_params": args.params,
        "shared_seconds": {},
        "data_digest": {},
        "runs": [],
        "machine": machine() + [f"- node: {platform.node()}"],
    }
    start = time.perf_counter()
    status = 0
    try:
        for seed in args.seeds:
            project = workdir / f"seed_{seed}"
            if project.exists():
                shutil.rmtree(project)
            copy_project(project)
            print(f"seed {seed}: {SHARED_PIPELINES} in {project}", file=sys.stderr, flush=True)
            seconds, error = kedro_run(project, args.env, SHARED_PIPELINES, args.params, "shared")
            results["shared_seconds"][str(seed)] = seconds
            if error:
                print(f"FAILED: shared part ({SHARED_PIPELINES}), seed {seed}: {error}", file=sys.stderr)
                results["runs"].append({"row": "(shared)", "seed": seed, "seconds": seconds, "error": error})
                status = 1
                continue
            results["data_digest"][str(seed)] = data_digest(project)
            for name in args.rows:
                run = run_row(project, args, name, seed, workdir / "results" / f"seed_{seed}" / name)
                status = 1 if "error" in run else status
                results["runs"].append(run)
    finally:
        results["total_seconds"] = time.perf_counter() - start
        if args.out:
            args.out.write_text(json.dumps(results, indent=2))
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    report(results)
    return status


if __name__ == "__main__":
    sys.exit(main())
