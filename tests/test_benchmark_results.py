"""The quality tables of the benchmarks page are generated from the raw results kept in benchmarks/results/.

A block of ``docs/benchmarks.md`` between ``<!-- generated: python benchmarks/quality.py --report FILE -->``
and ``<!-- end generated -->`` must be exactly what that command prints: a table is never copied or edited
by hand, and the raw result it comes from stays in git.
"""

import contextlib
import importlib
import io
import json
import re
import sys

import pytest

from tests.conftest import PROJECT_ROOT

PAGE = PROJECT_ROOT / "docs" / "benchmarks.md"
BLOCK = re.compile(
    r"<!-- generated: python benchmarks/quality.py --report (?P<file>\S+) -->\n(?P<body>.*?)<!-- end generated -->",
    re.DOTALL,
)


def _quality():
    sys.path.insert(0, str(PROJECT_ROOT / "benchmarks"))
    try:
        return importlib.import_module("quality")
    finally:
        sys.path.remove(str(PROJECT_ROOT / "benchmarks"))


def _blocks():
    return [(m.group("file"), m.group("body")) for m in BLOCK.finditer(PAGE.read_text())]


def test_the_page_has_generated_quality_tables():
    assert _blocks(), "docs/benchmarks.md holds no generated quality table"


@pytest.mark.parametrize(("file", "body"), _blocks() or [("-", "-")])
def test_each_generated_table_is_what_its_command_prints(file, body):
    results = json.loads((PROJECT_ROOT / file).read_text())
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        _quality().report(results)
    assert body.strip() == printed.getvalue().strip(), f"regenerate: python benchmarks/quality.py --report {file}"
    assert results.get("revision"), f"{file} names the revision it measured"


def test_the_generator_would_notice_an_edited_number(tmp_path):
    file, body = _blocks()[0]
    results = json.loads((PROJECT_ROOT / file).read_text())
    run = next(r for r in results["runs"] if "volumes" in r)
    run["volumes"][0]["n_ssim"] += 0.25
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        _quality().report(results)
    assert printed.getvalue().strip() != body.strip()
