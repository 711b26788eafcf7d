"""Which inputs of a run do not exist yet, and the one command that makes them (no Kedro import).

A run's free inputs (what its pipelines read but do not write) must exist before its first node, or the
run would fail hours later. For each missing input this module finds the pipeline that makes it and,
recursively, what that pipeline needs in turn; the answer is one command with the user's own options
(``kedro run --pipelines simulation,preprocessing,patching,training --env test``). An input at the
user's own location (their raw folder, their model file) is never "made" by a pipeline: it is named
with the parameter that chose it.

The project hook (:mod:`fusemycell.hooks.planning`) describes the registered pipelines and the
catalog with :class:`PipelineShape` and :class:`DatasetFacts`; everything here is plain data.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from fusemycell.errors import Setting, UserError
from fusemycell.parameters import RUN_LOCATIONS


class MissingInputError(UserError, RuntimeError):
    """An input of the run does not exist; the message names the command that makes it."""


@dataclass(frozen=True)
class PipelineShape:
    """What a pipeline reads from outside (``inputs``) and everything it writes (``outputs``)."""

    inputs: frozenset[str]
    outputs: frozenset[str]


class DatasetFacts(Protocol):
    """What the planner needs to know about the catalog's datasets."""

    def exists(self, name: str) -> bool:
        """True when the dataset's data is there (a dataset that cannot tell says True)."""

    def location(self, name: str) -> str | None:
        """The dataset's file or folder, as a user reads it (None: no location)."""

    def user_chosen(self, name: str) -> bool:
        """True when a parameter put the dataset elsewhere than its default (the user's own data or model)."""


@dataclass(frozen=True)
class Missing:
    """An input that does not exist, where it was looked for, and the pipeline that makes it (None: none does)."""

    name: str
    location: str
    producer: str | None


#: Inputs that are, by default, the very files another dataset writes (the model applied is the one trained).
SAME_FILE_AS = {"inference_model": "trained_model", "inference_inputs": "raw_pairs"}


def _is_parameter(name: str) -> bool:
    return name.startswith("params:") or name == "parameters"


def _producer(name: str, facts: DatasetFacts, pipelines: Mapping[str, PipelineShape]) -> str | None:
    if facts.user_chosen(name):  # your own folder or model: no pipeline should make it for you
        return None
    other = SAME_FILE_AS.get(name)
    made_as = other if other is not None and facts.location(name) == facts.location(other) else name
    return next((pipeline for pipeline, shape in pipelines.items() if made_as in shape.outputs), None)


def find_missing(
    inputs: Iterable[str], pipelines: Mapping[str, PipelineShape], facts: DatasetFacts
) -> tuple[list[Missing], list[str]]:
    """The run's inputs that do not exist, and the pipelines (in the order of ``pipelines``) that make them.

    ``pipelines`` are the project's pipelines in data-flow order; ``inputs`` the run's free inputs. A
    pipeline that makes a missing input brings in the pipelines that make its own missing inputs.
    """
    seen: set[str] = set()

    def missing_of(names: Iterable[str]) -> list[Missing]:
        found = []
        for name in sorted(names):
            if _is_parameter(name) or name in seen:
                continue
            seen.add(name)
            if not facts.exists(name):
                found.append(Missing(name, facts.location(name) or "", _producer(name, facts, pipelines)))
        return found

    missing = missing_of(inputs)
    chain: set[str] = set()
    pending = [m.producer for m in missing if m.producer is not None]
    while pending:
        producer = pending.pop()
        if producer not in chain:
            chain.add(producer)
            pending += [m.producer for m in missing_of(pipelines[producer].inputs) if m.producer is not None]
    order = list(pipelines)
    return missing, sorted(chain, key=order.index)


def hint_command(
    pipelines: Sequence[str],
    env: str | None = None,
    raw_dir: str | None = None,
    locations: Mapping[str, str] | None = None,
) -> str:
    """``'kedro run --pipelines a,b --env mac --params raw_dir=...'``: the user's own options kept.

    ``locations``: other locations the user chose (``{"inference.input_dir": ...}``), kept in ``--params`` too.
    """
    words = ["kedro", "run", "--pipelines", ",".join(dict.fromkeys(pipelines))]
    if env:
        words += ["--env", str(env)]
    chosen = {**({"raw_dir": raw_dir} if raw_dir else {}), **(locations or {})}
    if chosen:
        words += ["--params", ",".join(f"{name}={value}" for name, value in chosen.items())]
    return "'" + " ".join(words) + "'"


def chosen_locations(runtime_params: Mapping[str, Any]) -> dict[str, str]:
    """The locations among a run's ``--params`` (``raw_dir``, ``inference.input_dir``, ...), by dotted name."""
    chosen = {}
    for location in RUN_LOCATIONS:
        value: Any = runtime_params
        for part in location.parameter.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
        if isinstance(value, str) and value:
            chosen[location.parameter] = value
    return chosen


def _names(missing: Iterable[Missing]) -> str:
    return ", ".join(f"{m.name} ({m.location})" if m.location else m.name for m in missing)


def check_inputs(
    inputs: Iterable[str],
    pipelines: Mapping[str, PipelineShape],
    facts: DatasetFacts,
    run_params: Mapping[str, Any],
) -> None:
    """Raise :class:`MissingInputError` naming what is missing and the command (or parameter) that fixes it.

    ``run_params`` are the run's own options: ``pipeline_names``, ``env`` and ``runtime_params``.
    """
    missing, chain = find_missing(inputs, pipelines, facts)
    unmade = [m for m in missing if m.producer is None]
    if unmade:
        settings = sorted({p for m in unmade if (p := _parameter_of(m.name))})
        if not settings:
            raise MissingInputError("{names} not found; no pipeline of this project makes it", names=_names(unmade))
        checks = {f"setting_{i}": Setting(name) for i, name in enumerate(settings)}
        raise MissingInputError(
            "{names} not found: check " + ", ".join("{" + key + "}" for key in checks), names=_names(unmade), **checks
        )
    if missing:
        requested = [p for p in run_params.get("pipeline_names") or [] if p != "__default__"]
        chosen = chosen_locations(run_params.get("runtime_params") or {})
        raw_dir = chosen.pop("raw_dir", None)
        command = hint_command([*chain, *requested], run_params.get("env"), raw_dir, chosen)
        others = sorted({p for m in missing if (p := _parameter_of(m.name))})  # a default the user may point elsewhere
        choices = {f"choice_{i}": Setting(name, "PATH") for i, name in enumerate(others)}
        raise MissingInputError(
            "{names} not found yet: run {command}"
            + ("" if not choices else ", or choose another: " + ", ".join("{" + key + "}" for key in choices)),
            names=_names(missing),
            command=command,
            **choices,
        )


def _parameter_of(name: str) -> str | None:
    """The parameter that chooses the location of the dataset ``name`` (:data:`fusemycell.parameters.RUN_LOCATIONS`)."""
    return next((location.parameter for location in RUN_LOCATIONS if location.dataset == name), None)
