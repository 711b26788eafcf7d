import pytest
from pydantic import ValidationError

from fusemycell.simulation import SimulationConfig

VOLUME = {"image_id": 0, "channel": "nucleus", "study": "a", "shape_zyx": (8, 16, 16), "spacing_zyx": (1, 0.4, 0.4)}


def test_defaults_are_valid():
    config = SimulationConfig(volumes=[VOLUME])
    assert config.angle.illumination_attenuation_length_um > 0


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"volumes": [{**VOLUME, "channel": "actin"}]}, "volumes.0.channel"),
        ({"volumes": [{**VOLUME, "shape_zyx": (2, 16, 16)}]}, "volumes.0.shape_zyx"),
        ({"volumes": [{**VOLUME, "spacing_zyx": (0, 0.4, 0.4)}]}, "volumes.0.spacing_zyx"),
        ({"volumes": [VOLUME, VOLUME]}, "duplicate (image_id, channel)"),
        ({"volumes": [VOLUME], "angle": {"photons": -1}}, "angle.photons"),
        ({"volumes": [VOLUME], "angle": {"phtons": 100}}, "angle.phtons"),
        ({"volumes": [VOLUME], "spellings": ["PixelSize"]}, "spellings"),
        ({"volumes": []}, "volumes"),
    ],
)
def test_bad_values_fail_naming_the_field(change, field):
    with pytest.raises(ValidationError) as raised:
        SimulationConfig(**change)
    assert field in str(raised.value)
