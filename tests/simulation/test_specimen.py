import numpy as np
import pytest

from fusemycell.simulation.config import SpecimenParams
from fusemycell.simulation.specimen import make_specimen


@pytest.mark.parametrize("channel", ["nucleus", "membrane"])
def test_specimen_is_deterministic_and_confined_to_the_body(channel):
    shape, spacing = (20, 60, 64), (1.5, 0.39, 0.39)
    first = make_specimen(channel, shape, spacing, SpecimenParams(), np.random.default_rng(3))
    second = make_specimen(channel, shape, spacing, SpecimenParams(), np.random.default_rng(3))
    np.testing.assert_array_equal(first.density, second.density)
    assert first.density.shape == shape and first.density.dtype == np.float32
    assert first.tissue.any() and not first.tissue.all()
    assert first.density[~first.tissue].max() < 0.1 * first.density[first.tissue].max()
    assert len(first.cell_centres_um) >= 2


def test_nuclei_are_compact_and_membranes_are_thin_shells():
    shape, spacing = (30, 80, 80), (1.0, 0.39, 0.39)
    nuclei = make_specimen("nucleus", shape, spacing, SpecimenParams(), np.random.default_rng(0))
    membranes = make_specimen("membrane", shape, spacing, SpecimenParams(), np.random.default_rng(0))
    # same seed, same cells: the two channels label the same embryo
    np.testing.assert_array_equal(nuclei.cell_centres_um, membranes.cell_centres_um)
    centres_vox = np.round(nuclei.cell_centres_um / np.array(spacing)).astype(int)
    at_centres_nuc = nuclei.density[tuple(centres_vox.T)]
    at_centres_mem = membranes.density[tuple(centres_vox.T)]
    # nuclei are bright at cell centres, membranes are dark there (they sit between cells)
    assert np.median(at_centres_nuc) > 3 * np.median(nuclei.density[nuclei.tissue])
    assert np.median(at_centres_mem) < np.median(membranes.density[membranes.tissue])


def test_unknown_channel_is_refused():
    with pytest.raises(ValueError, match="unknown channel 'actin'"):
        make_specimen("actin", (8, 16, 16), (1, 1, 1), SpecimenParams(), np.random.default_rng(0))


def test_a_volume_too_small_for_two_cells_still_has_its_surface_membrane():
    rng = np.random.default_rng(0)
    params = SpecimenParams(cell_diameter_um=200.0)  # one cell fills the whole body
    specimen = make_specimen("membrane", (8, 16, 16), (1.0, 0.4, 0.4), params, rng)
    assert len(specimen.cell_centres_um) < 2
    assert specimen.density[specimen.tissue].max() > 0
    assert np.isfinite(specimen.density).all()
