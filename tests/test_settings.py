"""Environments: each loads, and overrides only the keys it names (soft merge)."""

import pytest
from kedro.config import OmegaConfigLoader

from fusemycell import settings
from tests.conftest import PROJECT_ROOT


def _parameters(env: str) -> dict:
    loader = OmegaConfigLoader(
        conf_source=str(PROJECT_ROOT / "conf"),
        env=env,
        **{k: v for k, v in settings.CONFIG_LOADER_ARGS.items() if k != "default_run_env"},
    )
    return loader["parameters"]


def test_mac_overrides_only_what_it_names():
    base_training = _parameters("local")["training"]
    mac = _parameters("mac")
    assert mac["training"]["batch_size"] == 2
    assert mac["training"]["accumulation_steps"] == 1  # a step per batch: on a CPU accumulation only divides steps
    assert mac["training"]["amp"] is True
    # keys mac does not name come from base, also inside nested groups
    assert mac["training"]["learning_rate"] == base_training["learning_rate"]
    assert mac["training"]["model"]["base_channels"] != base_training["model"]["base_channels"]
    assert mac["training"]["model"]["normalization"] == base_training["model"]["normalization"]
    assert mac["simulation"] == _parameters("local")["simulation"]


def test_cloud_uses_every_gpu_and_large_patches():
    cloud = _parameters("cloud")
    assert cloud["training"]["device"] == "cuda"
    assert cloud["training"]["devices"] == "all"
    assert cloud["patching"]["patch_size_zyx"] == [64, 128, 128]


def test_test_env_shrinks_volumes_but_keeps_the_physics():
    test, base = _parameters("test"), _parameters("local")
    assert len(test["simulation"]["volumes"]) < len(base["simulation"]["volumes"])
    assert test["simulation"]["angle"] == base["simulation"]["angle"]
    assert test["simulation"]["specimen"]["cell_diameter_um"] != base["simulation"]["specimen"]["cell_diameter_um"]
    assert test["simulation"]["specimen"]["nucleus_fraction"] == base["simulation"]["specimen"]["nucleus_fraction"]


@pytest.mark.parametrize("env", ["local", "mac", "cloud", "test"])
def test_every_environment_has_a_valid_simulation(env):
    from fusemycell.pipelines.simulation.nodes import parse_simulation_config

    assert parse_simulation_config(_parameters(env)["simulation"]).volumes


def test_mlflow_tracks_to_sqlite_on_localhost():
    loader = OmegaConfigLoader(
        conf_source=str(PROJECT_ROOT / "conf"),
        env="local",
        **{k: v for k, v in settings.CONFIG_LOADER_ARGS.items() if k != "default_run_env"},
    )
    mlflow = loader["mlflow"]
    assert mlflow["server"]["mlflow_tracking_uri"] == "sqlite:///mlflow.db"
    assert mlflow["tracking"]["experiment"]["name"] == "fusemycell"
    assert mlflow["tracking"]["params"]["dict_params"]["flatten"] is True
    assert mlflow["ui"]["host"] == "127.0.0.1"


def test_telemetry_is_off_for_the_project():
    import yaml

    assert yaml.safe_load((PROJECT_ROOT / ".telemetry").read_text()) == {"consent": False}
