"""Benchmark: test N_SSIM of the main job at equal wall-clock, paired over seeds, per channel and per study.

Every option is a *row*: the main job with some parameters changed (deep-merged into the Kedro
environment's ``parameters.yml`` of a throw-away project copy, so lists and nested keys work), or
the code and defaults of an earlier revision (``today``: what the project did before). Every row
trains for the same time budget (the environment's ``training.budget_minutes`` unless the row sets
its own), on the same simulated data and split, once per seed (``training.seed`` and
``patching.seed``); rows run one after another, so run the script on an otherwise idle machine.

For each code version (the checkout, and each revision a row names) one project copy runs
``simulation,preprocessing`` once; each (row, seed) then runs ``patching,training,evaluation`` in
it after emptying what the previous row wrote. Read back per run: the evaluation's per-volume
table (model, identity and blur N_SSIM of every held-out volume) and the model card (best epoch,
guard scale, optimizer steps, validation share).

Reported (Markdown on stdout, progress on stderr):

* per row: test N_SSIM per channel and per study, mean over seeds, with the smallest margin of the
  model over ``max(identity, blur)`` on any held-out volume in any seed;
* per row with a reference row: the **paired difference** row - reference, per seed, then its mean,
  standard deviation, minimum and maximum over seeds, per channel and per study;
* the baselines (identity, blur) and three **ceilings** computed from the simulator's own truth
  without training (:mod:`fusemycell.simulation.ceilings`: the input with its true depth-dependent
  gain undone, the noise-free single view, both), so the table shows how much of the reachable gain
  each option takes.

``--out FILE`` writes everything as JSON; ``--report FILE`` prints the tables of such a file again.
The exit status is 1 if any ``kedro run`` failed (its log tail is printed; other rows still run).

Usage::

    python benchmarks/quality.py [--env mac] [--seeds 1 2 3 4] [--rows today default ...]
        [--workdir DIR] [--out results.json]
    python benchmarks/quality.py --rows default@b4db048 ...   # a row on the code and defaults of a revision
    python benchmarks/quality.py --report results.json
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import _measure
import harness
import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]

#: The revision whose code and defaults the ``today`` row runs (main before exact tiling and the faster training).
TODAY_REVISION = "613ff09"


@dataclass(frozen=True)
class Row:
    """One option: parameter overrides (nested, as in ``parameters.yml``), an optional revision, a reference."""

    overrides: dict[str, Any] = field(default_factory=dict)
    revision: str | None = None
    reference: str | None = None
    note: str = ""


ROWS: dict[str, Row] = {
    "today": Row(revision=TODAY_REVISION, note="the code and defaults before: instance norm, blended tiles, float32"),
    "default": Row(reference="today", note="this checkout's defaults"),
    "accumulation 4": Row({"training": {"accumulation_steps": 4}}, reference="default"),
    "float32": Row({"training": {"amp": False}, "inference": {"amp": False}}, reference="default"),
    "instance + blend": Row({"training": {"model": {"normalization": "instance"}}}, reference="default"),
    "none + exact": Row({"training": {"model": {"normalization": "none"}}}, reference="default"),
    "+position": Row({"patching": {"position": {"enabled": True}}}, reference="default"),
    "+gain/offset": Row({"training": {"model": {"gain_offset": True}}}, reference="default"),
    "deep patches": Row({"patching": {"patch_size_zyx": [32, 64, 64]}}, reference="default"),
    # The epoch cap is raised with the budget: at 15 minutes the mac cap of 30 epochs stopped training after ~11.5.
    "budget 10": Row({"training": {"budget_minutes": 10.0, "epochs": 80}}, reference="default"),
    "budget 15": Row({"training": {"budget_minutes": 15.0, "epochs": 80}}, reference="default"),
    # The fingerprint chooses the voxel size (nnU-Net's rule over the training volumes): study c's 3 um planes
    # are interpolated to the others' 1 um, and every prediction goes back to its input's grid.
    "resample auto": Row({"preprocessing": {"resample": {"enabled": "auto"}}}, reference="default"),
    # Global context: the single view at low resolution (block means smoothed over 8 um, computed once per volume
    # and sampled per tile) as an input channel, alone and with the distance channels.
    "+context": Row({"patching": {"position": {"enabled": True, "channels": ["context"]}}}, reference="default"),
    "+position+context": Row(
        {
            "patching": {
                "position": {"enabled": True, "channels": ["surface_distance", "depth_z", "depth_x", "context"]}
            }
        },
        reference="default",
    ),
    "resample off": Row({"preprocessing": {"resample": {"enabled": False}}}, reference="default"),
}
#: Leave one study out: train on the other studies, test on every volume of this one (the test real users meet).
for _study in ("a", "b", "c"):
    _held_out = {"split": {"test_studies": [_study], "test_fraction": 0.0}}
    ROWS[f"loso {_study}"] = Row(
        {"preprocessing": {**_held_out, "resample": {"enabled": False}}},
        note=f"study {_study} held out: trained on the others, tested on all of its volumes; resampling off",
    )
    ROWS[f"loso {_study} + resample auto"] = Row(
        {"preprocessing": {**_held_out, "resample": {"enabled": "auto"}}},
        reference=f"loso {_study}",
        note=f"study {_study} held out; the training volumes' voxel sizes choose the target (nnU-Net's rule)",
    )
#: The defaults published on the benchmarks page (two idle cores, 2026-12-07): a reference that does not move
#: when the defaults do. Any row runs on the code and defaults of a revision as ``NAME@REVISION``.
PUBLISHED_DEFAULT_REVISION = "b4db048"
ROWS["published default"] = Row(
    revision=PUBLISHED_DEFAULT_REVISION,
    note=f"the defaults of revision {PUBLISHED_DEFAULT_REVISION}, published on the benchmarks page: a pinned reference",
)


def row_named(name: str) -> Row:
    """The row ``name``: one of :data:`ROWS`, or ``NAME@REVISION``, that row on the code and defaults of REVISION.

    ``NAME@REVISION`` reruns a published row as it was measured (the report prints the command with its
    rows pinned so). A pinned row's reference, unless pinned itself, is pinned to the same revision.
    Raises ``KeyError`` for an unknown name and ``ValueError`` for a row that names its revision twice.
    """
    base, _, revision = name.partition("@")
    row = ROWS[base]
    if not revision:
        return row
    if row.revision is not None:
        raise ValueError(f"row {base!r} already runs revision {row.revision}")
    reference = row.reference
    if reference is not None and ROWS[reference].revision is None:
        reference = f"{reference}@{revision}"
    if row.overrides:
        note = f"{row.note or json.dumps(row.overrides)}; on the code and defaults of revision {revision}"
    else:
        note = f"the code and defaults of revision {revision}"
    return Row(row.overrides, revision=revision, reference=reference, note=note)


def pinned_name(name: str, definition: dict, revision: str | None) -> str | None:
    """``name`` as it reruns the row measured on ``revision`` (a checkout's row pinned to it); None when the
    checkout had uncommitted changes (nothing pins that code)."""
    if definition.get("revision") or "@" in name:
        return name
    if not revision or "+" in revision or revision == "unknown":
        return None
    return f"{name}@{revision}"


#: Parameter groups that the shared part (``simulation,preprocessing``) reads: rows that set them get their own.
SHARED_GROUPS = ("simulation", "preprocessing")
DEFAULT_ROWS = ("today", "default", "accumulation 4", "float32", "instance + blend", "+position", "+gain/offset")

SHARED_PIPELINES = "simulation,preprocessing"
ROW_PIPELINES = "patching,training,evaluation"
ROW_OUTPUTS = ("data/05_model_input", "data/06_models", "data/07_model_output", "data/08_reporting/evaluation")
SPLIT = "data/02_intermediate/split.csv"
RAW = "data/01_raw/synthetic"
PER_VOLUME = "data/08_reporting/evaluation/per_volume.csv"
MODEL = "data/06_models/fusemycell_unet.pt"
MODEL_METHOD, IDENTITY, BLUR = "model", "identity", "gaussian_blur"
TAIL_LINES = 40


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="mac", help="Kedro environment (default mac; test = tiny data, seconds)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4], help="training and patching seeds")
    parser.add_argument(
        "--rows",
        nargs="+",
        default=list(DEFAULT_ROWS),
        help=f"rows, of: {', '.join(ROWS)}; NAME@REVISION: that row on a revision's code and defaults",
    )
    parser.add_argument(
        "--fixed-epochs",
        type=int,
        default=None,
        help="train every row for this many epochs with no time budget: equal work instead of equal wall-clock, "
        "for a comparison on a machine that is not idle (rows that set their own budget keep it)",
    )
    parser.add_argument("--workdir", type=Path, default=None, help="kept project copies (default: temporary)")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    parser.add_argument("--report", type=Path, default=None, help="print the tables of a JSON file and stop")
    args = parser.parse_args(argv)
    for name in args.rows:
        try:
            row_named(name)
        except KeyError:
            parser.error(f"unknown row {name!r}; known: {list(ROWS)}, each also as NAME@REVISION")
        except ValueError as error:
            parser.error(str(error))
    return args


# -- code versions, project copies and kedro runs -------------------------------------------------
def code_tree(revision: str | None, workdir: Path) -> Path:
    """The source tree of ``revision`` (extracted with ``git archive``), or this checkout for None."""
    return ROOT if revision is None else _measure.revision_tree(revision, workdir, ROOT)


def copy_project(code: Path, destination: Path) -> Path:
    """A project copy (config and metadata of ``code``; data and MLflow store of its own)."""
    destination.mkdir(parents=True, exist_ok=True)
    shutil.copytree(code / "conf", destination / "conf", ignore=shutil.ignore_patterns("local"))
    (destination / "conf" / "local").mkdir(exist_ok=True)
    for name in ("pyproject.toml", ".telemetry"):
        if (code / name).exists():
            shutil.copy(code / name, destination / name)
    (destination / "src").mkdir(exist_ok=True)
    for layer in sorted(p.name for p in (code / "data").iterdir() if p.is_dir()):
        (destination / "data" / layer).mkdir(parents=True, exist_ok=True)
    return destination


def deep_merge(base: dict, overrides: dict) -> dict:
    """``overrides`` into ``base`` (nested dicts merged, anything else replaced)."""
    merged = dict(base)
    for key, value in overrides.items():
        merged[key] = (
            deep_merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
        )
    return merged


def set_overrides(project: Path, env: str, pristine: dict, overrides: dict) -> None:
    """The environment's ``parameters.yml`` of ``project``: its own content with ``overrides`` merged in."""
    path = project / "conf" / env / "parameters.yml"
    path.write_text(yaml.safe_dump(deep_merge(pristine, overrides), sort_keys=False))


def child_environment(code: Path) -> dict[str, str]:
    """The environment of the ``kedro run`` children: ``code``'s package first, no telemetry, wide lines."""
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "1", "COLUMNS": "250"}
    env.pop("MLFLOW_TRACKING_URI", None)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(code / "src"), os.environ.get("PYTHONPATH", "")) if p)
    return env


def kedro_run(project: Path, code: Path, env: str, pipelines: str, log_name: str) -> tuple[float, str | None]:
    """``kedro run`` in ``project`` with ``code``'s package; its wall time and, if it failed, its log tail."""
    command = [sys.executable, "-m", "kedro", "run", "--env", env, "--pipelines", pipelines]
    logs = project / "logs"
    logs.mkdir(exist_ok=True)
    out_path, err_path = logs / f"{log_name}.stdout", logs / f"{log_name}.stderr"
    print(f"  $ {' '.join(command)}", file=sys.stderr, flush=True)
    start = time.perf_counter()
    with out_path.open("w") as out, err_path.open("w") as err:
        result = subprocess.run(command, cwd=project, env=child_environment(code), stdout=out, stderr=err, check=False)
    elapsed = time.perf_counter() - start
    if result.returncode == 0:
        return elapsed, None
    text = err_path.read_text(errors="replace").strip() or out_path.read_text(errors="replace").strip()
    return elapsed, f"exit status {result.returncode}; last lines of {err_path}:\n" + "\n".join(
        text.splitlines()[-TAIL_LINES:]
    )


def clear_row_outputs(project: Path) -> None:
    """Empty the folders a row writes (keeping the folders)."""
    for relative in ROW_OUTPUTS:
        folder = project / relative
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True, exist_ok=True)


def run_overrides(args: argparse.Namespace, seed: int) -> dict:
    """What every row of one seed sets: the seeds, and with ``--fixed-epochs`` equal work instead of a budget."""
    overrides: dict = {"training": {"seed": seed}, "patching": {"seed": seed}}
    if args.fixed_epochs:
        overrides["training"] |= {"budget_minutes": None, "epochs": args.fixed_epochs}
    return overrides


def read_per_volume(project: Path) -> list[dict]:
    """The evaluation's per-volume rows: pair, channel, study, method, n_ssim."""
    with (project / PER_VOLUME).open() as handle:
        return [
            {key: row[key] for key in ("pair", "channel", "study", "method")} | {"n_ssim": float(row["n_ssim"])}
            for row in csv.DictReader(handle)
        ]


def read_card(project: Path, code: Path) -> dict:
    """Best epoch, guard scale, steps and validation share from the model card (read with ``code``'s package)."""
    script = (
        "import json, sys; from fusemycell.models.model_file import load_model; c = load_model(sys.argv[1]).card; "
        "t = getattr(c, 'training', None); g = c.guard; v = c.validation; print(json.dumps({"
        "'best_epoch': v.epoch if v else None, 'guard_scale': g.scale if g else None, "
        "'optimizer_steps': t.optimizer_steps if t else None, 'epochs': t.epochs if t else None, "
        "'validation_share': t.validation_share if t else None, 'precision': t.precision if t else None}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(project / MODEL)],
        env=child_environment(code),
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode:
        return {"error": result.stderr.strip().splitlines()[-1:] or ["?"]}
    return json.loads(result.stdout)


# -- ceilings -----------------------------------------------------------------------------------
def ceilings(project: Path, env: str) -> list[dict]:
    """Per held-out volume, N_SSIM of the simulator's ceilings (same rows as the per-volume table)."""
    from kedro.config import OmegaConfigLoader

    from fusemycell.io.formats import read_volume
    from fusemycell.metrics.ssim import image_statistics, normalized_ssim, ssim
    from fusemycell.simulation.ceilings import ceiling_views
    from fusemycell.simulation.config import SimulationConfig

    parameters = OmegaConfigLoader(str(project / "conf"), base_env="base", default_run_env=env)["parameters"]
    config = SimulationConfig.model_validate(parameters["simulation"])
    specs = {(spec.image_id, spec.channel): spec for spec in config.volumes}
    rows = []
    with (project / SPLIT).open() as handle:
        test = [row for row in csv.DictReader(handle) if row["split"] == "test"]
    for row in test:
        _, image_id, channel = row["pair"].split("_")
        spec = specs[(int(image_id), channel)]
        angle = np.asarray(read_volume(project / RAW / f"{row['pair']}_angle.tif").data)
        fused = np.asarray(read_volume(project / RAW / f"{row['pair']}_fused.tif").data)
        target = image_statistics(fused)
        ssim_input = ssim(angle, fused, statistics=(image_statistics(angle), target))
        for name, view in ceiling_views(spec, config, angle).items():
            score = ssim(view, fused, statistics=(image_statistics(view), target))
            rows.append(
                {
                    "pair": row["pair"],
                    "channel": channel,
                    "study": spec.study,
                    "method": name,
                    "n_ssim": normalized_ssim(score, ssim_input),
                }
            )
    return rows


# -- summaries ----------------------------------------------------------------------------------
def group_means(volumes: list[dict], method: str, key: str) -> dict[str, float]:
    """Mean N_SSIM of ``method`` per value of ``key`` (channel or study)."""
    groups: dict[str, list[float]] = {}
    for v in volumes:
        if v["method"] == method:
            groups.setdefault(v[key], []).append(v["n_ssim"])
    return {k: statistics.mean(values) for k, values in sorted(groups.items())}


def summarise(volumes: list[dict], method: str = MODEL_METHOD) -> dict:
    """Per channel, per study, the mean over channels, and the smallest margin over the baselines."""
    by_pair: dict[str, dict[str, float]] = {}
    for v in volumes:
        by_pair.setdefault(v["pair"], {})[v["method"]] = v["n_ssim"]
    margins = [s[method] - max(s[IDENTITY], s[BLUR]) for s in by_pair.values() if {method, IDENTITY, BLUR} <= s.keys()]
    channel = group_means(volumes, method, "channel")
    return {
        "channel": channel,
        "study": group_means(volumes, method, "study"),
        "mean": statistics.mean(channel.values()) if channel else float("nan"),
        "min_margin": min(margins) if margins else float("nan"),
    }


def fmt(value: float | None, digits: int = 3, sign: bool = False) -> str:
    """A number for the tables, ``-`` when missing."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "-"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def _mean_of(values: Any) -> float | None:
    """The mean of the values that are there (None when none is)."""
    present = [v for v in values if v is not None]
    return statistics.mean(present) if present else None


def spread(values: list[float]) -> str:
    """``mean ± sd [min, max]`` of paired differences."""
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):+.3f} ± {sd:.3f} [{min(values):+.3f}, {max(values):+.3f}]"


def rerun_line(results: dict, names: list[str]) -> str:
    """The command that reruns ``names`` on the code and defaults they were measured on (rows pinned with ``@``)."""
    pinned = [pinned_name(n, results["definitions"][n], results.get("revision")) for n in names]
    if None in pinned:
        return (
            f"Measured on revision {results.get('revision')}, which had uncommitted changes: no revision pins "
            "these rows' code, so they cannot be rerun as measured."
        )
    options = ["--env", results["env"], "--seeds", *map(str, results["seeds"]), "--rows", *pinned]
    if results.get("fixed_epochs"):
        options += ["--fixed-epochs", str(results["fixed_epochs"])]
    return "Rerun as measured: `" + shlex.join(["python", "benchmarks/quality.py", *options]) + "`"


def report(results: dict) -> None:
    """The Markdown tables of ``results``."""
    runs = [r for r in results["runs"] if "volumes" in r]
    names = [n for n in results["rows"] if any(r["row"] == n for r in runs)]
    channels = sorted({c for r in runs for c in summarise(r["volumes"])["channel"]})
    studies = sorted({s for r in runs for s in summarise(r["volumes"])["study"]})
    print(f"## Quality at equal wall-clock: test N_SSIM of the main job, env `{results['env']}`\n")
    print(
        f"{results['date']}; revision {results.get('revision', 'not recorded')}; seeds {results['seeds']}; "
        "one row after another on one machine.\n"
    )
    if results.get("fixed_epochs"):
        print(f"Equal work: every row trained {results['fixed_epochs']} epochs with no time budget.\n")
    print(rerun_line(results, names) + "\n")
    for name in names:
        row = results["definitions"][name]
        print(
            f"- `{name}`: {row['note'] or json.dumps(row['overrides'])}"
            + (f" (revision {row['revision']})" if row["revision"] else "")
        )
    print("\n### Per row (mean over seeds)\n")
    print(
        "| row | "
        + " | ".join(channels)
        + " | mean | "
        + " | ".join(f"study {s}" for s in studies)
        + " | min margin | steps | best epoch | guard | validation share | run (s) |"
    )
    print("|---|" + "---:|" * (len(channels) + len(studies) + 7))
    for name in names:
        mine = [r for r in runs if r["row"] == name]
        sums = [summarise(r["volumes"]) for r in mine]
        cells = [fmt(statistics.mean(s["channel"][c] for s in sums)) for c in channels]
        cells.append(f"**{fmt(statistics.mean(s['mean'] for s in sums))}**")
        cells += [fmt(_mean_of(s["study"].get(st) for s in sums)) for st in studies]  # a held-out row has one
        cells.append(fmt(min(s["min_margin"] for s in sums), sign=True))
        cards = [r.get("card") or {} for r in mine]

        def card_mean(key: str, digits: int = 0, cards: list[dict] = cards) -> str:
            values = [c[key] for c in cards if c.get(key) is not None]
            return fmt(statistics.mean(values), digits) if values else "-"

        cells += [
            card_mean("optimizer_steps"),
            card_mean("best_epoch", 1),
            card_mean("guard_scale", 2),
            card_mean("validation_share", 2),
            fmt(statistics.mean(r["seconds"] for r in mine), 0),
        ]
        print(f"| {name} | " + " | ".join(cells) + " |")
    test_sets: dict[tuple[str, ...], str] = {}  # each distinct test set's baselines once (held-out rows have theirs)
    for run in runs:
        test_sets.setdefault(tuple(sorted({v["pair"] for v in run["volumes"]})), run["row"])
    for first_row in test_sets.values():
        volumes = next(r["volumes"] for r in runs if r["row"] == first_row)
        where = f" ({first_row}'s test set)" if len(test_sets) > 1 else ""
        for method, label in ((IDENTITY, "identity"), (BLUR, "blur")):
            reference_row(f"{label}{where}", summarise(volumes, method), channels, studies)
    for name in results.get("ceiling_names", []):
        label = f"ceiling: {name}{' (default split)' if len(test_sets) > 1 else ''}"
        reference_row(label, summarise(results["ceilings"], name), channels, studies)

    for version, seconds in results.get("shared_seconds", {}).items():
        print(
            f"\n`simulation,preprocessing` ({version}) took {seconds:.0f} s: the main job takes that plus a row's "
            "run (`patching,training,evaluation`), in two processes."
        )
    paired_table(results, runs, names, channels, studies)
    worst_volume_table(runs, names)
    per_seed_table(runs, channels)
    failed = [r for r in results["runs"] if r.get("error")]
    if failed:
        print("\nFailed runs: " + ", ".join(f"{r['row']} (seed {r['seed']})" for r in failed))
    print(f"\nTotal wall time: {results['total_seconds'] / 60:.0f} min\n\nMachine:\n")
    print("\n".join(results["machine"]))


def reference_row(label: str, s: dict, channels: list[str], studies: list[str]) -> None:
    """A baseline's or a ceiling's line of the per-row table (no training columns)."""
    print(
        f"| {label} | "
        + " | ".join(fmt(s["channel"].get(c)) for c in channels)
        + f" | {fmt(s['mean'])} | "
        + " | ".join(fmt(s["study"].get(st)) for st in studies)
        + " | | | | | | |"
    )


def paired_table(results: dict, runs: list[dict], names: list[str], channels: list[str], studies: list[str]) -> None:
    """Row - reference, seed by seed: mean, spread and extremes over seeds."""
    print("\n### Paired differences (row - reference, same seed): mean ± sd [min, max] over seeds\n")
    print(
        "| row | reference | mean | " + " | ".join(channels) + " | " + " | ".join(f"study {s}" for s in studies) + " |"
    )
    print("|---|---|" + "---|" * (1 + len(channels) + len(studies)))
    for name in names:
        reference = results["definitions"][name]["reference"]
        if reference not in names:
            continue
        pairs = []
        for seed in results["seeds"]:
            a = [r for r in runs if r["row"] == name and r["seed"] == seed]
            b = [r for r in runs if r["row"] == reference and r["seed"] == seed]
            if a and b:
                pairs.append((summarise(a[0]["volumes"]), summarise(b[0]["volumes"])))
        cells = [spread([x["mean"] - y["mean"] for x, y in pairs])]
        cells += [spread([x["channel"][c] - y["channel"][c] for x, y in pairs if c in x["channel"]]) for c in channels]
        cells += [spread([x["study"][s] - y["study"][s] for x, y in pairs if s in x["study"]]) for s in studies]
        print(f"| {name} | {reference} | " + " | ".join(cells) + " |")


def worst_volume_table(runs: list[dict], names: list[str]) -> None:
    """Per row, every held-out volume: the model's mean and minimum over seeds beside the baselines."""
    print("\n### Every held-out volume: the model's mean and worst seed, and the baselines\n")
    print("| row | volume | study | model mean | model min over seeds | identity | blur |")
    print("|---|---|---|---:|---:|---:|---:|")
    for name in names:
        scores: dict[tuple[str, str], dict[str, list[float]]] = {}
        for run in (r for r in runs if r["row"] == name):
            for v in run["volumes"]:
                scores.setdefault((v["pair"], v["study"]), {}).setdefault(v["method"], []).append(v["n_ssim"])
        for (pair, study), methods in sorted(scores.items()):
            model = methods.get(MODEL_METHOD) or [float("nan")]
            identity = methods.get(IDENTITY) or [float("nan")]
            blur = methods.get(BLUR) or [float("nan")]
            print(
                f"| {name} | {pair} | {study} | {fmt(statistics.mean(model))} | {fmt(min(model))} | "
                f"{fmt(statistics.mean(identity))} | {fmt(statistics.mean(blur))} |"
            )


def per_seed_table(runs: list[dict], channels: list[str]) -> None:
    """Every run."""
    print("\n### Per seed\n")
    print("| row | seed | mean | " + " | ".join(channels) + " | min margin | seconds |")
    print("|---|---:|---:|" + "---:|" * (len(channels) + 2))
    for run in runs:
        s = summarise(run["volumes"])
        print(
            f"| {run['row']} | {run['seed']} | {fmt(s['mean'])} | "
            + " | ".join(fmt(s["channel"][c]) for c in channels)
            + f" | {fmt(s['min_margin'], sign=True)} | {run['seconds']:.0f} |"
        )


def machine() -> list[str]:
    """The machine, with the versions that matter."""
    from importlib.metadata import version

    import torch

    versions = ", ".join(f"{p} {version(p)}" for p in ("numpy", "torch", "kedro"))
    capability = torch.backends.cpu.get_cpu_capability()
    cpus = f"- CPUs: {os.cpu_count()} ({_measure.cpu_model()}), PyTorch CPU capability {capability}"
    return _measure.machine_description(versions, cpus=cpus) + [f"- node: {platform.node()}"]


def shared_key(row: Row) -> tuple[str | None, str]:
    """Rows with the same code and the same simulation and preprocessing parameters share one project copy."""
    shared = {group: row.overrides[group] for group in SHARED_GROUPS if group in row.overrides}
    return row.revision, json.dumps(shared, sort_keys=True)


def shared_parts(args: argparse.Namespace, workdir: Path, results: dict) -> tuple[dict, int]:
    """A project copy per code version and shared parameters of the rows, with ``simulation,preprocessing``
    run in it (timed in ``results``)."""
    projects: dict[tuple[str | None, str], tuple[Path, Path, dict]] = {}
    status = 0
    for key in dict.fromkeys(shared_key(row_named(n)) for n in args.rows):
        revision, shared = key
        code = code_tree(revision, workdir)
        label = f"{revision or 'checkout'}" + ("" if shared == "{}" else f"_{len(projects)}")
        project = copy_project(code, workdir / f"project_{label}")
        pristine = yaml.safe_load((project / "conf" / args.env / "parameters.yml").read_text()) or {}
        set_overrides(project, args.env, pristine, json.loads(shared))
        print(
            f"{SHARED_PIPELINES} for {revision or 'this checkout'} {shared} in {project}", file=sys.stderr, flush=True
        )
        seconds, error = kedro_run(project, code, args.env, SHARED_PIPELINES, "shared")
        results.setdefault("shared_seconds", {})[f"{revision or 'checkout'} {shared}"] = seconds
        if error:
            print(f"FAILED: shared part for {revision} {shared}: {error}", file=sys.stderr)
            status = 1
            continue
        projects[key] = (project, code, pristine)
    return projects, status


def main(argv: list[str] | None = None) -> int:
    """Run every row for every seed; print the tables."""
    args = parse_args(argv)
    if args.report:
        report(json.loads(args.report.read_text()))
        return 0
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="quality_"))
    workdir.mkdir(parents=True, exist_ok=True)
    results: dict = {
        "script": "quality",
        "command": harness.command("quality", sys.argv[1:] if argv is None else argv),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "env": args.env,
        "seeds": args.seeds,
        "fixed_epochs": args.fixed_epochs,
        "revision": _measure.checkout_revision(ROOT),
        "rows": args.rows,
        "definitions": {n: dataclasses.asdict(row_named(n)) for n in args.rows},  # overrides, revision, ...
        "runs": [],
        "machine": machine(),
    }
    start = time.perf_counter()
    try:
        projects, status = shared_parts(args, workdir, results)
        checkout = projects.get((None, "{}")) or next(iter(projects.values()))
        results["ceilings"] = ceilings(checkout[0], args.env)
        results["ceiling_names"] = sorted({v["method"] for v in results["ceilings"]})
        for seed in args.seeds:  # seeds outermost: an interrupted run still has paired rows
            for name in args.rows:
                row = row_named(name)
                if shared_key(row) not in projects:
                    continue
                project, code, pristine = projects[shared_key(row)]
                clear_row_outputs(project)
                set_overrides(
                    project,
                    args.env,
                    pristine,
                    deep_merge(run_overrides(args, seed), row.overrides),
                )
                print(f"seed {seed}, row {name}", file=sys.stderr, flush=True)
                seconds, error = kedro_run(
                    project, code, args.env, ROW_PIPELINES, f"{name.replace(' ', '_').replace('/', '_')}_{seed}"
                )
                run: dict = {"row": name, "seed": seed, "seconds": seconds}
                if error:
                    print(f"FAILED: row {name}, seed {seed}: {error}", file=sys.stderr)
                    run["error"], status = error, 1
                else:
                    run["volumes"] = read_per_volume(project)
                    run["card"] = read_card(project, code)
                    print(
                        f"  {seconds:.0f} s, test N_SSIM {summarise(run['volumes'])['channel']}",
                        file=sys.stderr,
                        flush=True,
                    )
                results["runs"].append(run)
                if args.out:
                    args.out.write_text(json.dumps({**results, "total_seconds": time.perf_counter() - start}, indent=2))
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
