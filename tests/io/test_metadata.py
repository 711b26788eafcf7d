import pytest

from fusemycell.io.metadata import as_positive_float, canonical_key, normalize_metadata, unit_scale_to_micrometre


@pytest.mark.parametrize(
    "spelling", ["PhysicalSizeX", "physicalsizex", "physical_size_x", "Physical Size X", "PHYSICAL-SIZE-X"]
)
def test_every_spelling_of_a_voxel_size_maps_to_one_key(spelling):
    assert canonical_key(spelling) == "physical_size_x"


def test_normalise_keeps_unknown_keys_and_first_spelling_wins():
    normalised = normalize_metadata(
        {"PhysicalSizeZ": 2.0, "physical_size_z": 9.0, "Study": "s1", "Channel": "nucleus", "norm_Low": 3}
    )
    assert normalised == {"physical_size_z": 2.0, "study": "s1", "channel": "nucleus", "norm_Low": 3}


@pytest.mark.parametrize(("unit", "scale"), [("micron", 1.0), ("µm", 1.0), ("um", 1.0), ("nm", 1e-3), ("mm", 1e3)])
def test_units_convert_to_micrometres(unit, scale):
    assert unit_scale_to_micrometre(unit) == pytest.approx(scale)


def test_unknown_unit_is_reported_as_unknown():
    assert unit_scale_to_micrometre("furlong") is None


@pytest.mark.parametrize("value", [None, "abc", 0, -1.0, float("nan"), float("inf"), True])
def test_invalid_voxel_sizes_are_rejected(value):
    assert as_positive_float(value) is None


def test_voxel_size_strings_are_parsed():
    assert as_positive_float("0.195") == pytest.approx(0.195)
