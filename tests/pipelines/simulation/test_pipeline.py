"""The simulation pipeline through a real Kedro session, as `kedro run --pipelines simulation --env test` runs it."""

import numpy as np
import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from fusemycell.datasets import FuseMyCellPairsDataset
from fusemycell.io.formats import read_volume
from fusemycell.parameters import ParameterError, ParameterOrigins, validate_parameters
from fusemycell.pipelines.simulation import create_pipeline
from fusemycell.pipelines.simulation.nodes import simulate_acquisitions
from fusemycell.simulation import SimulationConfig
from tests.conftest import PROJECT_ROOT, run_session

TINY = {
    "seed": 1,
    "volumes": [
        {"image_id": 3, "channel": "nucleus", "study": "a", "shape_zyx": [9, 30, 34], "spacing_zyx": [1.0, 0.39, 0.39]},
        {
            "image_id": 4,
            "channel": "membrane",
            "study": "b",
            "shape_zyx": [5, 33, 31],
            "spacing_zyx": [3.0, 0.39, 0.39],
        },
    ],
}
TINY_CONFIG = SimulationConfig.model_validate(TINY)  # what the project hook gives the node


def test_pipeline_writes_pairs_through_the_catalog(tmp_path):
    catalog = DataCatalog(
        {"raw_pairs": FuseMyCellPairsDataset(path=tmp_path / "raw"), "params:simulation": MemoryDataset(TINY_CONFIG)}
    )
    SequentialRunner().run(create_pipeline(), catalog)
    pairs = FuseMyCellPairsDataset(path=tmp_path / "raw").load()
    assert set(pairs) == {"image_3_nucleus", "image_4_membrane"}
    membrane = read_volume(pairs["image_4_membrane"].fused)
    assert membrane.shape == (5, 33, 31)
    assert membrane.spacing_zyx == pytest.approx((3.0, 0.39, 0.39))
    assert membrane.metadata["study"] == "b"


def test_bad_parameters_name_the_yaml_and_the_field():
    """Checked once, before any node: the node itself only ever receives a valid, typed configuration."""
    broken = {**TINY, "volumes": [{**TINY["volumes"][0], "channel": "actin"}]}
    origins = ParameterOrigins(PROJECT_ROOT / "conf", "base", None, {})
    with pytest.raises(
        ParameterError,
        match=r"simulation\.volumes\[0\]\.channel = 'actin' \(set in conf/base/parameters_simulation\.yml\)",
    ):
        validate_parameters({"simulation": broken}, origins)
    with pytest.raises(ValueError, match="no simulation parameters"):
        simulate_acquisitions(None)


@pytest.mark.slow
def test_kedro_session_runs_simulation_in_the_test_env(kedro_project):
    run_session(kedro_project, ["simulation"])
    raw = kedro_project / "data" / "01_raw" / "synthetic"
    names = sorted(p.name for p in raw.glob("*.tif"))
    assert names == [
        "image_0_nucleus_angle.tif",
        "image_0_nucleus_fused.tif",
        "image_1_membrane_angle.tif",
        "image_1_membrane_fused.tif",
        "image_2_nucleus_angle.tif",
        "image_2_nucleus_fused.tif",
        "image_3_membrane_angle.tif",
        "image_3_membrane_fused.tif",
    ]
    angle = read_volume(raw / "image_2_nucleus_angle.tif")
    fused = read_volume(raw / "image_2_nucleus_fused.tif")
    assert angle.shape == fused.shape == (7, 42, 42)
    assert angle.data.dtype == np.uint16
    assert angle.spacing_zyx == pytest.approx((3.0, 0.39, 0.39))
    # tracking went to the copy's own store, never the developer's project
    assert (kedro_project / "mlflow.db").exists()
