"""The README stays a doorway, the docs hold no issue numbers and no broken relative links, and the
configuration reference documents every parameter."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from fusemycell.parameters import ProjectParameters
from tests.conftest import PROJECT_ROOT

README = PROJECT_ROOT / "README.md"
DOCS = PROJECT_ROOT / "docs"
MARKDOWN = [README, PROJECT_ROOT / "benchmarks" / "README.md", *sorted(DOCS.rglob("*.md"))]

#: "issue 12", "issues 3 and 4", "#12" (not an HTML entity such as "&#124;", not a heading's "#")
ISSUE_NUMBER = re.compile(r"\bissues?\s+#?\d+|(?<![\w&#])#\d+\b", re.IGNORECASE)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)


def _relative_links(path: Path) -> list[str]:
    text = FENCE.sub("", path.read_text())
    text = re.sub(r"`[^`\n]*`", "", text)  # code spans are not links
    targets = [m.group(1) for m in LINK.finditer(text)]
    return [t for t in targets if not re.match(r"^([a-z][a-z0-9+.-]*:|#|/)", t, re.IGNORECASE)]


def _name(path: Path) -> str:
    return path.relative_to(PROJECT_ROOT).as_posix()


def test_the_readme_is_at_most_200_lines():
    lines = README.read_text().splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines: move the detail into docs/"


@pytest.mark.parametrize("path", MARKDOWN, ids=_name)
def test_no_issue_numbers(path):
    found = [m.group(0) for m in ISSUE_NUMBER.finditer(path.read_text())]
    assert not found, f"{_name(path)} names issues {found}: say what the behaviour is instead"


def test_the_issue_pattern_finds_issue_numbers_and_nothing_else():
    assert ISSUE_NUMBER.findall("see issue 12, Issues 3 and #14")
    assert not ISSUE_NUMBER.findall("a `|` as &#124;, a ## heading, 16x64x64, step #a")


@pytest.mark.parametrize("path", MARKDOWN, ids=_name)
def test_relative_links_point_to_existing_files(path):
    broken = [t for t in _relative_links(path) if not (path.parent / t.split("#", 1)[0]).exists()]
    assert not broken, f"{_name(path)} links to missing files: {broken}"


def test_the_link_check_sees_links_and_images(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "[a](other.md#part) ![b](images/x.png) [c](https://example.org) [d](#here)\n"
        "`[e](in-code.md)`\n```\n[f](in-fence.md)\n```\n"
    )
    assert _relative_links(page) == ["other.md#part", "images/x.png"]


def _load_generator():
    spec = importlib.util.spec_from_file_location("config_reference", DOCS / "hooks" / "config_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _keys(model, prefix: str, generator) -> list[tuple[str, object, str]]:
    """``(dotted key, its class, field name)`` of every field of ``model`` and its nested groups."""
    found = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        found.append((key, model, name))
        child, many = generator.nested_model(field.annotation)
        if child is not None:
            found += _keys(child, f"{key}[]." if many else f"{key}.", generator)
    return found


def test_the_configuration_reference_documents_every_parameter():
    generator = _load_generator()
    page = (DOCS / "reference" / "configuration.md").read_text()
    assert generator.MARKER.search(page), "the configuration page holds the generator's marker"
    rendered = generator.on_page_markdown(page)
    assert not generator.MARKER.search(rendered)
    keys = _keys(ProjectParameters, "", generator)
    assert len(keys) > 100
    for key, _, _ in keys:
        assert f"| `{key}` |" in rendered, f"{key} is missing from the configuration reference"
    undocumented = [
        key
        for key, model, name in keys
        if generator.nested_model(model.model_fields[name].annotation)[0] is None
        and not generator.field_docs(model).get(name)
    ]
    assert not undocumented, f"write a docstring under these fields: {undocumented}"


def test_the_reference_renders_types_bounds_and_defaults():
    generator = _load_generator()
    rendered = generator.render(ProjectParameters)
    row = next(line for line in rendered.splitlines() if line.startswith("| `inference.overlap` |"))
    assert "float (≥ 0, < 1)" in row and "`0.5`" in row and "neighbours" in row
    row = next(line for line in rendered.splitlines() if line.startswith("| `inference.tile_zyx` |"))
    assert "[int, int, int] or null" in row and "`null`" in row
