"""One data folder per dataset (fusemycell.workspace): own data never replaces the demo's artefacts."""

from pathlib import Path

import pytest

from fusemycell.workspace import in_workspace, relocated, workspace_name


def test_the_demo_keeps_the_catalog_locations(tmp_path):
    assert workspace_name("data/01_raw/synthetic", tmp_path) is None
    assert workspace_name(tmp_path / "data" / "01_raw" / "synthetic", tmp_path) is None
    assert in_workspace("data/06_models/fusemycell_unet.pt", None) == "data/06_models/fusemycell_unet.pt"


def test_a_raw_folder_in_data_01_raw_is_named_by_its_folder(tmp_path):
    assert workspace_name("data/01_raw/fusemycell", tmp_path) == "fusemycell"
    assert workspace_name("data/01_raw/my stacks (2024)", tmp_path) == "my_stacks_2024_"


def test_two_outside_folders_of_one_name_never_share_a_workspace(tmp_path):
    first, second = workspace_name("/exp1/raw", tmp_path), workspace_name("/exp2/raw", tmp_path)
    assert first.startswith("raw-") and second.startswith("raw-") and first != second
    assert workspace_name("/exp1/raw", tmp_path) == first  # stable from run to run


@pytest.mark.parametrize(
    ("location", "moved"),
    [
        ("data/06_models/fusemycell_unet.pt", "data/06_models/mine/fusemycell_unet.pt"),
        ("data/02_intermediate/volumes", "data/02_intermediate/mine/volumes"),
        ("data/08_reporting/evaluation/by_channel.csv", "data/08_reporting/mine/evaluation/by_channel.csv"),
        ("data/01_raw/synthetic", "data/01_raw/synthetic"),  # raw data is the user's own: never moved
        ("/elsewhere/data/06_models/x.pt", "/elsewhere/data/06_models/x.pt"),  # outside the project
        ("mlflow.db", "mlflow.db"),
    ],
)
def test_every_data_layer_but_raw_moves_into_the_workspace(location, moved):
    assert in_workspace(location, "mine", "/project") == moved


def test_absolute_catalog_paths_inside_the_project_move_too(tmp_path):
    absolute = str((tmp_path / "data" / "06_models" / "fusemycell_unet.pt").resolve())
    assert in_workspace(absolute, "mine", tmp_path) == str(
        Path(tmp_path).resolve() / "data/06_models/mine/fusemycell_unet.pt"
    )


def test_a_catalog_entry_moves_with_its_inner_dataset():
    entry = {
        "type": "kedro_mlflow.io.artifacts.MlflowArtifactDataset",
        "artifact_path": "model",
        "dataset": {"type": "fusemycell.datasets.TorchModelDataset", "filepath": "data/06_models/fusemycell_unet.pt"},
    }
    moved = relocated(entry, "mine")
    assert moved["dataset"]["filepath"] == "data/06_models/mine/fusemycell_unet.pt"
    assert moved["artifact_path"] == "model" and entry["dataset"]["filepath"] == "data/06_models/fusemycell_unet.pt"
