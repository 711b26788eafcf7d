"""The benchmark tables of the docs are generated from the raw results kept in benchmarks/results/.

A block of ``docs/benchmarks.md`` between ``<!-- generated: python benchmarks/SCRIPT.py --report FILE -->``
and ``<!-- end generated -->`` must be exactly what that command prints: a table is never copied or edited
by hand, and the raw result it comes from stays in git, names the revision it was measured on and the
command that measures it again.
"""

import contextlib
import importlib
import io
import json
import re
import subprocess
import sys

import pytest

from tests.conftest import PROJECT_ROOT

PAGE = PROJECT_ROOT / "docs" / "benchmarks.md"
BENCHMARKS = PROJECT_ROOT / "benchmarks"
RESULTS = BENCHMARKS / "results"
BLOCK = re.compile(
    r"<!-- generated: python benchmarks/(?P<script>\w+)\.py --report (?P<file>\S+) -->\n"
    r"(?P<body>.*?)<!-- end generated -->",
    re.DOTALL,
)
#: Scripts with no result on the page yet: the GPU check needs a CUDA GPU.
NOT_ON_THE_PAGE = {"gpu_check"}


def _script(name: str):
    sys.path.insert(0, str(BENCHMARKS))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCHMARKS))


def _blocks():
    return [(m.group("script"), m.group("file"), m.group("body")) for m in BLOCK.finditer(PAGE.read_text())]


def _printed(script: str, results: dict) -> str:
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        _script(script).report(results)
    return printed.getvalue()


def test_the_page_has_generated_tables():
    scripts = {script for script, _, _ in _blocks()}
    assert "quality" in scripts, "docs/benchmarks.md holds no generated quality table"
    assert len(scripts) > 1, "only quality.py's tables are generated"


@pytest.mark.parametrize(("script", "file", "body"), _blocks() or [("-", "-", "-")])
def test_each_generated_table_is_what_its_command_prints(script, file, body):
    results = json.loads((PROJECT_ROOT / file).read_text())
    assert body.strip() == _printed(script, results).strip(), (
        f"regenerate: python benchmarks/{script}.py --report {file}"
    )
    assert results.get("revision"), f"{file} names the revision it measured"


@pytest.mark.parametrize("file", sorted(RESULTS.glob("*.json")), ids=lambda path: path.name)
def test_every_result_file_is_small_and_names_its_revision_and_command(file):
    results = json.loads(file.read_text())
    assert results.get("revision"), f"{file.name} names the revision it measured"
    assert file.stat().st_size < 200_000, f"{file.name} is a raw result, not an array dump"
    if "script" in results:  # written by the harness (the quality files came before it)
        assert results["command"].startswith(f"python benchmarks/{results['script']}.py"), file.name
        assert results["machine"], file.name


def _committed_results() -> list[str]:
    """The result files in git (a run in progress may leave one that its page block has not caught up with)."""
    listed = subprocess.run(
        ["git", "ls-files", "benchmarks/results"], cwd=PROJECT_ROOT, capture_output=True, text=True, check=False
    )
    if listed.returncode != 0:  # not a git checkout: every file
        return [f"benchmarks/results/{p.name}" for p in RESULTS.glob("*.json")]
    return [line for line in listed.stdout.splitlines() if line.endswith(".json")]


def test_every_result_file_is_on_the_page():
    shown = {file for _, file, _ in _blocks()}
    missing = [file for file in _committed_results() if file not in shown]
    assert not missing, f"results not shown in docs/benchmarks.md: {missing}"


def test_every_script_runs_through_the_harness():
    scripts = sorted(p.stem for p in BENCHMARKS.glob("*.py") if not p.stem.startswith("_") and p.stem != "harness")
    for name in scripts:
        text = (BENCHMARKS / f"{name}.py").read_text()
        assert "--report" in text, f"benchmarks/{name}.py has no --report"
        assert "harness" in text or name == "quality", f"benchmarks/{name}.py does not use benchmarks/harness.py"
        assert name in NOT_ON_THE_PAGE or any(s == name for s, _, _ in _blocks()), (
            f"benchmarks/{name}.py has no generated block in docs/benchmarks.md"
        )


def test_the_generator_would_notice_an_edited_number():
    for script, file, body in _blocks():
        results = json.loads((PROJECT_ROOT / file).read_text())
        if script == "quality":
            run = next(r for r in results["runs"] if "volumes" in r)
            run["volumes"][0]["n_ssim"] += 0.25
        else:
            results["revision"] = "0000000"
        assert _printed(script, results).strip() != body.strip()


@pytest.mark.parametrize("file", sorted(RESULTS.glob("quality-*.json")), ids=lambda path: path.name)
def test_every_published_quality_row_reruns_as_measured(file):
    """The report's rerun command pins each row to the revision it ran on, and the row it names still sets
    what the result recorded: rerunning it runs the same code, defaults and overrides."""
    quality = _script("quality")
    results = json.loads(file.read_text())
    line = quality.rerun_line(results, results["rows"])
    assert line.startswith("Rerun as measured: `python benchmarks/quality.py"), line
    for name in results["rows"]:
        pinned = quality.pinned_name(name, results["definitions"][name], results["revision"])
        assert pinned in line
        row = quality.row_named(pinned)
        assert row.overrides == results["definitions"][name]["overrides"], f"row {name!r} of {file.name} changed"
        assert row.revision == (results["definitions"][name]["revision"] or results["revision"])


def test_a_quality_row_pinned_to_a_revision_runs_its_code_and_defaults():
    quality = _script("quality")
    pinned = quality.row_named("+position@abc1234")
    assert pinned.revision == "abc1234" and pinned.reference == "default@abc1234"
    assert pinned.overrides == quality.ROWS["+position"].overrides
    assert quality.row_named("published default").revision == quality.PUBLISHED_DEFAULT_REVISION
    with pytest.raises(ValueError, match="already runs revision"):
        quality.row_named("today@abc1234")  # a row with its own revision is pinned already
    with pytest.raises(KeyError):
        quality.row_named("no such row@abc1234")
    uncommitted = {"revision": "abc1234+uncommitted", "env": "mac", "seeds": [1], "rows": ["default"]}
    uncommitted["definitions"] = {"default": {"revision": None}}
    assert "cannot be rerun" in quality.rerun_line(uncommitted, ["default"])
    with pytest.raises(SystemExit):
        quality.parse_args(["--rows", "no such row"])
