import pytest

from fusemycell.simulation import SimulationConfig


@pytest.fixture(scope="module")
def small_config() -> SimulationConfig:
    """Two small acquisitions, one per channel, one of them anisotropic with few z planes."""
    return SimulationConfig(
        seed=7,
        volumes=[
            {
                "image_id": 0,
                "channel": "nucleus",
                "study": "a",
                "shape_zyx": (40, 90, 96),
                "spacing_zyx": (1.0, 0.39, 0.39),
            },
            {
                "image_id": 1,
                "channel": "membrane",
                "study": "c",
                "shape_zyx": (13, 100, 94),
                "spacing_zyx": (3.0, 0.39, 0.39),
            },
        ],
    )
