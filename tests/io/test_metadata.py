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


def test_ome_images_gives_every_image_with_its_sizes_and_units():
    from fusemycell.io.metadata import ome_images

    xml = (
        '<?xml version="1.0"?><OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06">'
        '<Image ID="Image:0" Name="thumb"><Pixels SizeX="8" SizeY="8"/></Image>'
        '<Image ID="Image:1" Name="stack"><Pixels PhysicalSizeX="200" PhysicalSizeXUnit="nm" PhysicalSizeZ="2.5"/>'
        "</Image></OME>"
    )
    images = ome_images(xml)
    assert [image.name for image in images] == ["thumb", "stack"]
    assert images[0].sizes == {}
    assert images[1].sizes == {"x": ("200", "nm"), "z": ("2.5", "µm")}  # OME's default unit is the micrometre


@pytest.mark.parametrize("text", [None, "", "not xml <", "ImageJ=1.11a\nimages=4\n"])
def test_ome_images_of_text_that_is_not_ome_xml_is_empty(text):
    from fusemycell.io.metadata import ome_images

    assert ome_images(text) == []


@pytest.mark.parametrize(("unit", "scale"), [("Å", 1e-4), ("pm", 1e-6), ("nm", 1e-3), ("µm", 1.0)])
def test_ome_units_convert_to_micrometres(unit, scale):
    assert unit_scale_to_micrometre(unit) == pytest.approx(scale)
