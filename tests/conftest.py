"""Shared fixtures: telemetry off, a throw-away copy of the project for Kedro sessions."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# no network at run time: kedro-telemetry must never try to send anything
os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")

PROJECT_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="session")
def use_leak_safe_log_records():
    """Keep Python's own log records: this overrides the napari pytest plugin's fixture of the same name.

    napari (installed for the napari plugin) registers a pytest plugin whose record factory turns every
    log argument into a string by iterating ``args``; a single dict argument (``logger.info("split by
    volume: %s", counts)``) then becomes its keys and formatting the record fails inside Kedro's nodes.
    """
    yield


def copy_project(destination: Path) -> Path:
    """Copy what a Kedro run needs (config, project metadata) into ``destination``.

    Runs in the copy write their data and their MLflow store (``mlflow.db``)
    there, never into the developer's project.
    """
    destination.mkdir(parents=True, exist_ok=True)
    shutil.copytree(PROJECT_ROOT / "conf", destination / "conf", ignore=shutil.ignore_patterns("local"))
    (destination / "conf" / "local").mkdir(exist_ok=True)
    for name in ("pyproject.toml", ".telemetry"):
        shutil.copy(PROJECT_ROOT / name, destination / name)
    (destination / "src").mkdir(exist_ok=True)  # Kedro wants it; the package itself is installed
    # MLflow caches one store per tracking URI, so the relative sqlite:///mlflow.db of conf/base
    # would follow the first copy of a test session; each copy tracks to its own absolute path
    (destination / "conf" / "test" / "mlflow.yml").write_text(
        f"server:\n  mlflow_tracking_uri: sqlite:///{(destination / 'mlflow.db').as_posix()}?timeout=60\n"
    )
    for layer in sorted(p.name for p in (PROJECT_ROOT / "data").iterdir() if p.is_dir()):
        (destination / "data" / layer).mkdir(parents=True, exist_ok=True)
    return destination


@pytest.fixture
def kedro_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh project copy, made the working directory (relative catalog paths resolve there)."""
    project = copy_project(tmp_path / "project")
    monkeypatch.chdir(project)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return project


def run_kedro(project: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """``kedro ARGS`` in ``project`` as a user types it (a fresh process, telemetry off, ``env`` added)."""
    return subprocess.run(
        [sys.executable, "-m", "kedro", *args],
        cwd=project,
        env={**os.environ, "KEDRO_DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "1", **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def run_session(project: Path, pipelines: list[str], env: str = "test", **runtime_params) -> dict:
    """Run pipelines in a Kedro session, as ``kedro run --pipelines ... --env test --params ...`` does.

    kedro-mlflow ends its run in the runner's context, which can leave the run on
    this thread's MLflow stack; it is closed here so the next session starts its own.
    """
    import mlflow
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(project)
    try:
        with KedroSession.create(project_path=project, env=env, runtime_params=runtime_params or None) as session:
            return session.run(pipeline_names=pipelines)
    finally:
        while mlflow.active_run():
            mlflow.end_run()


def inference_report(project: Path, output_dir: str | os.PathLike) -> dict:
    """The report of the last inference run of ``project`` into ``output_dir`` (the catalog's report folder)."""
    import json

    from fusemycell.inference.report import report_path

    output = Path(output_dir)
    path = report_path(
        project / "data" / "08_reporting" / "inference", output if output.is_absolute() else project / output
    )
    return json.loads(path.read_text())


def project_after(tmp_path_factory: pytest.TempPathFactory, name: str, *runs: list[str]) -> Path:
    """A fresh project copy in which the given pipeline runs were made, one session each, in order.

    For module-scoped fixtures; the working directory is restored afterwards.
    """
    project = copy_project(tmp_path_factory.mktemp(name) / "project")
    previous = os.getcwd()
    os.chdir(project)
    try:
        for pipelines in runs:
            run_session(project, pipelines)
    finally:
        os.chdir(previous)
    return project


@pytest.fixture(scope="session")
def evaluated_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project copy after the whole main job (simulation to evaluation) in the test environment.

    Shared by the evaluation and notebook tests; tests may add files to it but not remove any.
    """
    return project_after(
        tmp_path_factory, "evaluation", ["simulation", "preprocessing", "patching", "training", "evaluation"]
    )
