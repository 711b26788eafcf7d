"""The benchmark harness: timing, the machine, the revision, the JSON result and its Markdown report.

Every script in ``benchmarks/`` runs through :func:`main`::

    python benchmarks/<script>.py [options]            # measure, write benchmarks/results/<script>-<date>.json
    python benchmarks/<script>.py --report FILE.json   # print the Markdown of a result file again

A result file is small JSON (numbers and short lists, no arrays of voxels) with the fields every
script shares: ``script``, ``command`` (what reruns it, from the project root), ``date``,
``revision`` (the commit, ``+uncommitted`` when the checkout differed from it), ``machine``,
``note`` (``--note``: what else ran on the machine), ``parameters``; then the script's own rows.
``docs/benchmarks.md`` holds what ``--report`` prints between
``<!-- generated: python benchmarks/<script>.py --report FILE -->`` and ``<!-- end generated -->``,
and ``tests/test_benchmark_results.py`` checks every such block against its file.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import _measure

ROOT = _measure.ROOT
RESULTS = ROOT / "benchmarks" / "results"
#: Version of the shared fields of a result file.
SCHEMA = 1


# -- scratch space --------------------------------------------------------------------------------
@contextlib.contextmanager
def scratch_folder(given: Path | None, prefix: str) -> Iterator[Path]:
    """``given`` (``--workdir``: made if missing, kept), or a temporary folder removed afterwards."""
    folder = given or Path(tempfile.mkdtemp(prefix=prefix))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        yield folder
    finally:
        if given is None:
            shutil.rmtree(folder, ignore_errors=True)


# -- timing ---------------------------------------------------------------------------------------
def summary(values: Sequence[float]) -> dict[str, Any]:
    """Median, interquartile range and the values themselves (rounded: a result file stays small)."""
    ordered = sorted(values)
    if len(ordered) >= 2:
        q1, _, q3 = statistics.quantiles(ordered, n=4, method="inclusive")
    else:
        q1 = q3 = ordered[0]
    return {
        "median": statistics.median(ordered),
        "iqr": q3 - q1,
        "values": [round(v, 6) for v in values],
    }


def timed(function: Callable[[], Any], *, repeats: int = 3, warmup: int = 1) -> dict[str, Any]:
    """Run ``function`` ``warmup`` times untimed, then ``repeats`` times: :func:`summary` of the seconds."""
    for _ in range(warmup):
        function()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        seconds.append(time.perf_counter() - start)
    return summary(seconds)


def rate(function: Callable[[], Any], seconds: float, *, warmup: int = 2, minimum: int = 2) -> tuple[int, float]:
    """Run ``function`` repeatedly for ``seconds`` after ``warmup`` calls: (calls, elapsed seconds)."""
    for _ in range(warmup):
        function()
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or calls < minimum:
        function()
        calls += 1
    return calls, time.perf_counter() - start


# -- peak memory (the implementations live in _measure, shared with the measuring children) -------
peak_rss_kib = _measure.peak_rss_kib
reset_peak_rss = _measure.reset_peak_rss
run_measurement = _measure.run_measurement


# -- the machine and the revision -----------------------------------------------------------------
def machine() -> dict[str, Any]:
    """What the numbers depend on: CPU model and ISA, CPUs usable by this process, RAM, library versions."""
    from importlib.metadata import PackageNotFoundError, version

    description: dict[str, Any] = {
        "cpu": _measure.cpu_model(),
        "cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "ram": _measure.total_ram(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    if "torch" in sys.modules or _importable("torch"):
        import torch

        description["isa"] = torch.backends.cpu.get_cpu_capability()
        description["torch_threads"] = torch.get_num_threads()
        description["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    versions = {}
    for package in ("numpy", "torch", "tifffile", "kedro", "onnxruntime", "monai", "scikit-image"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            continue
    description["versions"] = versions
    return description


def _importable(name: str) -> bool:
    from importlib.util import find_spec

    return find_spec(name) is not None


def revision() -> str:
    """The commit the checkout is at, ``+uncommitted`` when its tracked files differ from it."""
    return _measure.checkout_revision(ROOT)


def machine_lines(description: dict[str, Any] | list[str] | None) -> list[str]:
    """Markdown list lines for a :func:`machine` description (older files kept a list of lines)."""
    if not description:
        return ["- not recorded"]
    if isinstance(description, list):
        return list(description)
    cpus = f"- CPU: {description['cpu']}, {description['cpus']} cores, {description['usable_cpus']} usable here"
    if description.get("isa"):
        cpus += f", PyTorch CPU capability {description['isa']}, {description['torch_threads']} torch threads"
    lines = [cpus, f"- RAM: {description['ram']}; {description['platform']}"]
    if description.get("cuda"):
        lines.append(f"- GPU: {description['cuda']}")
    versions = ", ".join(f"{name} {value}" for name, value in description.get("versions", {}).items())
    lines.append(f"- python {description['python']}" + (f", {versions}" if versions else ""))
    return lines


# -- Markdown -------------------------------------------------------------------------------------
def table(header: Sequence[str], rows: Sequence[Sequence[Any]], align: str | None = None) -> list[str]:
    """A Markdown table; ``align`` has one character per column, ``l`` or ``r`` (default: first left)."""
    align = align or "l" + "r" * (len(header) - 1)
    rule = "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"
    return ["| " + " | ".join(header) + " |", rule] + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def above_baseline_mib(row: dict) -> float:
    """A measuring child's peak RSS above its baseline (``peak_kib`` - ``baseline_kib``), MiB."""
    return (row["peak_kib"] - row["baseline_kib"]) / 1024


def against_reference(row: dict, reference: dict, memory_digits: int = 2) -> list[str]:
    """Cells: time (median [IQR]), time x reference, peak RSS above baseline (MiB), memory x reference."""
    above = above_baseline_mib(row)
    return [
        f"{row['seconds']:.2f} [{row['seconds_iqr']:.2f}]",
        f"{row['seconds'] / reference['seconds']:.2f}",
        f"{above:.0f}",
        f"{above / above_baseline_mib(reference):.{memory_digits}f}",
    ]


def provenance(results: dict) -> list[str]:
    """The lines that say where and how a result was measured and how to measure it again."""
    lines = [
        f"Measured {results.get('date', 'on an unrecorded date')} on revision `{results.get('revision', 'unknown')}`"
        + (f"; {results['note']}" if results.get("note") else "")
        + ".",
        "",
        "```bash",
        results.get("command", "(command not recorded)"),
        "```",
        "",
        "Machine:",
        "",
        *machine_lines(results.get("machine")),
    ]
    return lines


def print_lines(lines: Sequence[str]) -> None:
    print("\n".join(lines))


# -- the command line -----------------------------------------------------------------------------
def parser(doc: str | None) -> argparse.ArgumentParser:
    """An argument parser with the harness's options: ``--report``, ``--out``, ``--note``."""
    parse = argparse.ArgumentParser(
        description=(doc or "").split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parse.add_argument("--report", type=Path, default=None, help="print the Markdown of a result file and stop")
    parse.add_argument(
        "--out", type=Path, default=None, help="result file (default benchmarks/results/<script>-<date>.json)"
    )
    parse.add_argument("--note", default="", help="what else ran on the machine (kept in the result)")
    return parse


HARNESS_OPTIONS = ("report", "out", "note")


def command(script: str, argv: Sequence[str]) -> str:
    """The command line that reruns ``script`` with ``argv`` from the project root (``--out``/``--note`` left out)."""
    kept, skip = [], False
    for argument in argv:
        if skip:
            skip = False
            continue
        if argument in ("--out", "--note"):
            skip = True
            continue
        if argument.startswith(("--out=", "--note=")):
            continue
        kept.append(argument)
    return shlex.join(["python", f"benchmarks/{script}.py", *kept])


def default_path(script: str, date: str) -> Path:
    return RESULTS / f"{script.replace('_', '-')}-{date[:10]}.json"


def write(results: dict, path: Path) -> Path:
    """Write ``results`` as indented JSON (atomically: a half-written result never replaces a whole one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(results, indent=1) + "\n")
    partial.replace(path)
    return path


def main(
    script_file: str,
    argv: Sequence[str] | None,
    parse: argparse.ArgumentParser,
    measure: Callable[[argparse.Namespace], dict],
    report: Callable[[dict], None],
    *,
    child: Callable[[argparse.Namespace], int | None] | None = None,
) -> int:
    """Parse, then either print the report of ``--report FILE``, or measure, write the result and report it.

    ``measure(args)`` returns the script's own fields (rows, ratios, ``failures``: a list of what did not
    agree); the harness adds the shared ones. ``child(args)`` handles a measuring child's hidden options
    and returns its exit status, or ``None`` when this is not a child. The exit status is 1 when
    ``failures`` is not empty.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse.parse_args(argv)
    if child is not None:
        status = child(args)
        if status is not None:
            return status
    if args.report is not None:
        report(json.loads(args.report.read_text()))
        return 0
    script = Path(script_file).stem
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parameters = {k: _plain(v) for k, v in vars(args).items() if k not in HARNESS_OPTIONS and v is not None}
    results: dict[str, Any] = {
        "schema": SCHEMA,
        "script": script,
        "command": command(script, argv),
        "date": date,
        "revision": revision(),
        "note": args.note,
        "parameters": parameters,
    }
    started = time.perf_counter()
    results.update(measure(args))
    results["total_seconds"] = round(time.perf_counter() - started, 1)
    results["machine"] = machine()
    path = write(results, args.out or default_path(script, date))
    print(f"result: {path}", file=sys.stderr)
    report(results)
    return 1 if results.get("failures") else 0


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    return value


# -- the docs ---------------------------------------------------------------------------------------
GENERATED = (
    r"(<!-- generated: python benchmarks/(?P<script>\w+)\.py --report (?P<file>\S+) -->\n)"
    r"(?P<body>.*?)(<!-- end generated -->)"
)


def regenerate(page: Path) -> int:
    """Rewrite every generated block of ``page`` with what its command prints; the number of blocks changed."""
    import contextlib
    import importlib
    import io
    import re

    changed = 0

    def block(match: re.Match) -> str:
        nonlocal changed
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            importlib.import_module(match.group("script")).report(json.loads((ROOT / match.group("file")).read_text()))
        body = printed.getvalue().strip() + "\n"
        changed += body != match.group("body")
        return match.group(1) + body + match.group(5)

    text = page.read_text()
    page.write_text(re.sub(GENERATED, block, text, flags=re.DOTALL))
    return changed


if __name__ == "__main__":
    # python benchmarks/harness.py docs/benchmarks.md: regenerate the page's tables from their result files
    for argument in sys.argv[1:]:
        print(f"{argument}: {regenerate(Path(argument))} block(s) regenerated", file=sys.stderr)
