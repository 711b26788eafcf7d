"""Environments: each one valid, each overriding only the keys it names (soft merge), MLflow offline."""

from __future__ import annotations

import math
from typing import Any

import pytest
import yaml
from kedro.config import OmegaConfigLoader

from fusemycell import settings
from fusemycell.parameters import validate_parameters
from tests.conftest import PROJECT_ROOT

ENVIRONMENTS = sorted(p.name for p in (PROJECT_ROOT / "conf").iterdir() if p.is_dir() and p.name != "base")


def _loader(env: str) -> OmegaConfigLoader:
    arguments = {k: v for k, v in settings.CONFIG_LOADER_ARGS.items() if k != "default_run_env"}
    return OmegaConfigLoader(conf_source=str(PROJECT_ROOT / "conf"), env=env, **arguments)


def _leaves(tree: Any, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    if not isinstance(tree, dict):
        return {prefix: tree}
    return {key: value for name, item in tree.items() for key, value in _leaves(item, (*prefix, name)).items()}


def _environment_file(env: str) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for path in sorted((PROJECT_ROOT / "conf" / env).glob("parameters*.yml")):
        merged.update(yaml.safe_load(path.read_text()) or {})
    return merged


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_an_environment_overrides_exactly_the_keys_it_names(env):
    """Soft merge: a key the environment names takes its value; every other key keeps the base's."""
    base, merged = _leaves(_loader("local")["parameters"]), _leaves(_loader(env)["parameters"])
    own = _leaves(_environment_file(env))
    for key, value in merged.items():
        named = next((k for k in own if key[: len(k)] == k), None)
        expected = own[named] if named == key else base.get(key) if named is None else value
        assert value == expected, ".".join(key)
    assert set(base) - set(merged) == set()  # nothing of the base lost


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_every_environment_is_valid(env):
    parameters = validate_parameters(_loader(env)["parameters"])
    assert parameters.simulation is not None and parameters.simulation.volumes  # the main job can run anywhere


def test_the_test_environment_is_small():
    """The test suite runs every pipeline in seconds: far fewer voxels than the default simulation."""

    def voxels(env: str) -> int:
        simulation = validate_parameters(_loader(env)["parameters"]).simulation
        assert simulation is not None
        return sum(math.prod(volume.shape_zyx) for volume in simulation.volumes)

    assert voxels("test") * 20 < voxels("local")


def test_mlflow_tracks_offline_to_one_file_per_project():
    mlflow = _loader("local")["mlflow"]
    assert mlflow["server"]["mlflow_tracking_uri"].startswith("sqlite:///")  # no server, no ./mlruns (refused)
    assert mlflow["tracking"]["params"]["dict_params"]["flatten"] is True  # training.batch_size, one per key


def test_telemetry_is_off_for_the_project():
    assert yaml.safe_load((PROJECT_ROOT / ".telemetry").read_text()) == {"consent": False}
