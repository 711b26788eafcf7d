"""The configuration reference, generated from the typed parameter classes at every docs build.

A MkDocs hook (``hooks:`` in ``mkdocs.yml``): a marker ``<!-- reference: MODULE.CLASS [KEY] -->`` in a
page is replaced by one table per config class (the class, then every nested group), one row per
field: its key (under ``KEY``, e.g. ``card``; none for the top level), type and bounds, default,
and the string literal written right under the field in the source (read with :mod:`ast`; a nested
group without one gets its class docstring). The configuration reference is
``<!-- reference: fusemycell.parameters.ProjectParameters -->``. The classes are imported from this
checkout's ``src/``; nothing else is needed: the build runs offline.

``python docs/hooks/config_reference.py [MODULE.CLASS [KEY]]`` prints the generated Markdown.
"""

from __future__ import annotations

import ast
import collections.abc
import enum
import importlib
import inspect
import re
import sys
import textwrap
import types
import typing
from pathlib import Path
from typing import Any

MARKER = re.compile(r"<!-- reference: ([\w.]+)(?: ([\w.]+))? -->")
PARAMETERS = "fusemycell.parameters.ProjectParameters"
SOURCE = Path(__file__).resolve().parents[2] / "src"

_BOUNDS = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<", "min_length": "length ≥", "max_length": "length ≤"}


def load_class(path: str) -> type:
    """The class at ``module.Class``, imported from this checkout (its ``src/`` first on the path)."""
    if str(SOURCE) not in sys.path:
        sys.path.insert(0, str(SOURCE))
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _is_model(value: Any) -> bool:
    from pydantic import BaseModel

    return isinstance(value, type) and issubclass(value, BaseModel)


def field_docs(cls: type) -> dict[str, str]:
    """``{field: the string literal right under it}`` for ``cls`` and the config classes it inherits."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not _is_model(klass) or klass.__module__.startswith("pydantic"):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):
            continue
        body = tree.body[0].body  # type: ignore[attr-defined]
        for statement, following in zip(body, body[1:]):
            if (
                isinstance(statement, ast.AnnAssign)
                and isinstance(statement.target, ast.Name)
                and isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)
            ):
                docs[statement.target.id] = inspect.cleandoc(following.value.value)
    return docs


def class_summary(cls: type) -> str:
    """The class docstring, as Markdown."""
    return _markdown(inspect.cleandoc(cls.__doc__ or ""))


def _markdown(text: str) -> str:
    """reST-flavoured docstring text as Markdown: ``code`` and :role:`target` become code spans."""
    text = re.sub(r":[a-z]+:`~?([^`]+)`", lambda m: f"`{m.group(1)}`", text)
    text = text.replace("``", "`")
    return text


def _cell(text: str) -> str:
    """Text for one table cell: one line, paragraphs kept apart, pipes outside code escaped."""
    paragraphs = [" ".join(p.split()) for p in text.split("\n\n") if p.strip()]
    joined = "<br><br>".join(paragraphs)
    parts = joined.split("`")
    return "`".join(part.replace("|", "\\|") if i % 2 == 0 else part for i, part in enumerate(parts))


def _tuple_name(args: tuple) -> str:
    if len(args) == 2 and args[1] is Ellipsis:
        return _list_of(type_name(args[0]))
    return "[" + ", ".join(type_name(a) for a in args) + "]"


def _either(args: tuple) -> str:
    return " or ".join(type_name(a) for a in args)


def _sequence_name(args: tuple) -> str:
    return _list_of(type_name(args[0])) if args else "list"


def _mapping_name(args: tuple) -> str:
    return f"mapping {type_name(args[0])} → {type_name(args[1])}" if args else "mapping"


#: How a generic type reads, by its origin (``tuple[int, int]``, ``int | None``, ``Literal[...]``...).
_GENERIC_NAMES = {
    typing.Annotated: lambda args: type_name(args[0]),
    typing.Literal: lambda args: " or ".join(f'"{a}"' if isinstance(a, str) else repr(a) for a in args),
    typing.Union: _either,
    types.UnionType: _either,
    tuple: _tuple_name,
    list: _sequence_name,
    set: _sequence_name,
    frozenset: _sequence_name,
    collections.abc.Sequence: _sequence_name,
    dict: _mapping_name,
}


def _plain_name(annotation: Any) -> str:
    """A non-generic type: a config group, an enumeration, a builtin."""
    if _is_model(annotation):
        return "group"
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return " or ".join(f'"{m.value}"' for m in annotation)
    if isinstance(annotation, type):
        return {"str": "text", "bool": "true/false", "NoneType": "null"}.get(annotation.__name__, annotation.__name__)
    return str(annotation).replace("typing.", "")


def type_name(annotation: Any) -> str:
    """A YAML user's name for a type: ``int``, ``float``, ``null``, one of listed values, a list..."""
    origin = typing.get_origin(annotation)
    if origin is None:
        return _plain_name(annotation)
    describe = _GENERIC_NAMES.get(origin)
    return describe(typing.get_args(annotation)) if describe else str(annotation).replace("typing.", "")


def _list_of(item: str) -> str:
    return f"list of ({item})" if " or " in item else f"list of {item}"


def bounds(field: Any) -> str:
    """``≥ 1``, ``> 0, < 1``: the constraints pydantic checks on a field."""
    found = []
    for item in field.metadata:
        for name, symbol in _BOUNDS.items():
            value = getattr(item, name, None)
            if value is not None:
                found.append(f"{symbol} {value}")
    return ", ".join(found)


def yaml_value(value: Any) -> str:
    """A default as it is written in the YAML (a config group inside it: "see below")."""
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(yaml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {yaml_value(v)}" for k, v in value.items()) + "}"
    if _is_model(type(value)):
        return "see below"
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    return str(value)


def _default_value(field: Any) -> Any:
    """The field's default (``PydanticUndefined`` when it is required)."""
    return field.default_factory() if field.default_factory is not None else field.default


def _default(value: Any) -> str:
    from pydantic_core import PydanticUndefined

    if value is PydanticUndefined:
        return "required"
    text = yaml_value(value)
    return "see below" if "see below" in text else f"`{text}`"


def nested_model(annotation: Any) -> tuple[type | None, bool]:
    """The config class a field holds (``Optional[X]``, ``tuple[X, ...]``), and whether it holds a list of them."""
    if _is_model(annotation):
        return annotation, False
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    for argument in args:
        found, many = nested_model(argument)
        if found is not None:
            return found, many or origin in (tuple, list)
    return None, False


def _anchor(key: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", key.lower()).strip("-")


def render_group(model: type, key: str, level: int, defaults: Any = None) -> list[str]:
    """The table of one config class at ``key`` (``training.model``; "" for the top level), then its nested groups.

    ``defaults`` is the group's default where it is nested (its parent's default may differ from the
    class's own, e.g. the model card's crop, off unless recorded); its values are the defaults shown.
    """
    title = f"`{key}` {{ #{_anchor(key)} }}" if key else "Top-level keys { #top-level-keys }"
    lines = [f"{'#' * level} {title}", "", class_summary(model), ""]
    lines += ["| key | type | default | description |", "|---|---|---|---|"]
    docs = field_docs(model)
    nested = []
    for name, field in model.model_fields.items():
        child, many = nested_model(field.annotation)
        value = getattr(defaults, name) if defaults is not None else _default_value(field)
        full = f"{key}.{name}" if key else name
        kind = type_name(field.annotation)
        limit = bounds(field)
        if limit:
            kind = f"{kind} ({limit})"
        doc = docs.get(name, "")
        if child is not None:
            target = f"{full}[]" if many else full
            nested.append((child, target, value if isinstance(value, child) else None))
            link = f"[`{target}`](#{_anchor(target)})"
            doc = f"{doc} See {link}." if doc else f"{class_summary(child).splitlines()[0]} See {link}."
            kind = f"list of groups ({limit})" if many and limit else ("list of groups" if many else "group")
        lines.append(f"| `{full}` | {_cell(kind)} | {_cell(_default(value))} | {_cell(_markdown(doc))} |")
    lines.append("")
    for child, target, child_defaults in nested:
        lines += render_group(child, target, min(level + 1, 4), child_defaults)
    return lines


def render(model: type, key: str = "") -> str:
    """The reference of ``model`` under ``key``: its fields, then one section per nested group."""
    return "\n".join(render_group(model, key, 2))


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    """MkDocs hook: every marker becomes the generated reference of its class."""
    return MARKER.sub(lambda m: render(load_class(m.group(1)), m.group(2) or ""), markdown)


if __name__ == "__main__":
    path = sys.argv[1] if len(sys.argv) > 1 else PARAMETERS
    key = sys.argv[2] if len(sys.argv) > 2 else ""
    print(render(load_class(path), key))
