"""The training domain: ranges from the fingerprint, a noise estimate that finds a known noise, and
departures only beyond each property's tolerance."""

import numpy as np
import pytest

from fusemycell.io.tiff import write_volume
from fusemycell.models.card import ModelCard, card_for
from fusemycell.models.config import UNetConfig
from fusemycell.models.domain import (
    InputMeasurement,
    TrainingDomain,
    ValueRange,
    domain_of_pairs,
    measure_array,
    measure_file,
    plane_indices,
    relative_noise,
    training_domain,
)


def _domain(**changes) -> TrainingDomain:
    values = {
        "volumes": 3,
        "spacing_zyx_um": (
            ValueRange(low=1.0, high=2.0),
            ValueRange(low=0.39, high=0.39),
            ValueRange(low=0.39, high=0.39),
        ),
        "shape_zyx": (ValueRange(low=40, high=80), ValueRange(low=200, high=300), ValueRange(low=200, high=300)),
        "percentiles": {"2": ValueRange(low=100, high=120), "99_8": ValueRange(low=2000, high=4000)},
        "noise": ValueRange(low=0.01, high=0.02),
    }
    return TrainingDomain(**{**values, **changes})


INSIDE = InputMeasurement((1.5, 0.39, 0.39), (60, 250, 250), {"2": 110.0, "99_8": 3000.0}, 0.015)


def test_an_input_inside_the_domain_has_no_departure():
    assert _domain().departures(INSIDE) == []


def test_a_plane_spacing_beyond_ten_percent_is_named_with_its_value_and_the_range():
    (departure,) = _domain().departures(InputMeasurement(**{**INSIDE.__dict__, "spacing_zyx": (3.0, 0.39, 0.39)}))
    assert departure.sentence() == "voxel size z 3.0 um is outside the training range 1.0-2.0 um"
    # within 10 % of the range's ends: not outside
    assert _domain().departures(InputMeasurement(**{**INSIDE.__dict__, "spacing_zyx": (2.15, 0.36, 0.42)})) == []
    (pixel,) = _domain().departures(InputMeasurement(**{**INSIDE.__dict__, "spacing_zyx": (1.5, 0.33, 0.39)}))
    assert pixel.sentence() == "voxel size y 0.33 um is outside the training range 0.39 um"


def test_shapes_only_count_when_far_outside():
    near = InputMeasurement(**{**INSIDE.__dict__, "shape_zyx": (22, 500, 500)})
    assert _domain().departures(near) == []  # within a factor 2
    far = InputMeasurement(**{**INSIDE.__dict__, "shape_zyx": (10, 250, 1920)})
    assert [d.property for d in _domain().departures(far)] == ["plane count", "width"]
    assert _domain().departures(far)[1].sentence() == "width 1920 voxels is outside the training range 200-300 voxels"


def test_intensities_and_noise_beyond_a_factor_two():
    dim = InputMeasurement(**{**INSIDE.__dict__, "percentiles": {"2": 0.0, "99_8": 255.0}, "noise": 0.1})
    found = {d.property: d for d in _domain().departures(dim)}
    assert set(found) == {"intensity p2", "intensity p99.8", "noise (relative)"}
    assert found["intensity p99.8"].value == 255.0 and found["intensity p99.8"].training.high == 4000
    near_zero = _domain(percentiles={"2": ValueRange(low=0, high=0)})
    assert near_zero.departures(InputMeasurement(percentiles={"2": 5.0})) == []  # 10 grey levels of slack
    assert near_zero.departures(InputMeasurement(percentiles={"2": 50.0}))


def test_unknown_properties_are_not_checked():
    assert _domain(noise=None).departures(InputMeasurement(noise=1.0)) == []
    assert _domain().departures(InputMeasurement()) == []


def test_relative_noise_finds_a_known_noise_despite_a_specimen():
    rng = np.random.default_rng(0)
    planes = np.full((4, 128, 128), 100.0, np.float32)
    planes[:, 30:90, 40:100] = 3000.0  # a bright specimen with sharp edges
    sigma = 20.0
    noisy = planes + rng.normal(0, sigma, planes.shape).astype(np.float32)
    estimate = relative_noise(noisy, 100.0, 3000.0)
    assert estimate == pytest.approx(sigma / 2900.0, rel=0.1)
    assert relative_noise(planes, 100.0, 3000.0) == 0.0  # no noise at all
    assert relative_noise(planes, 5.0, 5.0) is None


def test_planes_are_spread_over_the_volume():
    assert plane_indices(5) == [0, 1, 2, 3, 4]
    chosen = plane_indices(100, 8)
    assert chosen[0] == 0 and chosen[-1] == 99 and len(chosen) == 8


def test_a_file_is_measured_from_its_header_and_a_few_planes(tmp_path):
    rng = np.random.default_rng(1)
    data = rng.integers(100, 200, (12, 32, 40), dtype=np.uint16)
    write_volume(tmp_path / "v.tif", data, (3.0, 0.5, 0.5))
    measured = measure_file(str(tmp_path / "v.tif"))
    assert measured.spacing_zyx == pytest.approx((3.0, 0.5, 0.5)) and measured.shape_zyx == (12, 32, 40)
    assert 100 <= measured.percentiles["2"] < measured.percentiles["99_8"] <= 199
    assert measured.noise is not None and measured.noise > 0
    assert measure_array(data, None).spacing_zyx is None


def _record(name, pair, spacing, shape, p2, p998, kind="angle", path=""):
    return {
        "name": name,
        "pair": pair,
        "kind": kind,
        "path": path,
        "error": None,
        "spacing_zyx": spacing,
        "shape": shape,
        "percentiles": {"2": p2, "99_8": p998},
    }


def test_the_domain_spans_the_records_of_the_chosen_pairs():
    records = [
        _record("image_1_nucleus_angle", "image_1_nucleus", [1.0, 0.4, 0.4], [40, 100, 100], 90, 2000)
        | {"noise_sigma": 19.1},
        _record("image_2_nucleus_angle", "image_2_nucleus", [2.0, 0.4, 0.4], [20, 120, 90], 110, 3000),  # no noise
        _record("image_2_nucleus_fused", "image_2_nucleus", [9.0, 9.0, 9.0], [1, 1, 1], 0, 1, kind="fused"),
        _record("image_3_nucleus_angle", "image_3_nucleus", [5.0, 0.4, 0.4], [40, 100, 100], 90, 2000),  # a test pair
        {"name": "broken", "pair": "image_4_nucleus", "kind": "angle", "error": "not a TIFF"},
    ]
    domain = domain_of_pairs(records, ["image_1_nucleus", "image_2_nucleus", "image_4_nucleus"])
    assert domain is not None and domain.volumes == 2
    assert domain.spacing_zyx_um[0] == ValueRange(low=1.0, high=2.0)
    assert domain.shape_zyx[2] == ValueRange(low=90, high=100)
    assert domain.percentiles["99_8"] == ValueRange(low=2000, high=3000)
    assert domain.noise == ValueRange(low=19.1 / 1910, high=19.1 / 1910)  # the one record with a noise, relative
    assert domain_of_pairs(records, ["image_9_nucleus"]) is None
    assert training_domain(records[:2]).noise is None


def test_the_domain_travels_with_the_card_and_older_cards_load_without_it():
    config = UNetConfig(depth=2, base_channels=4)
    card = card_for(config, (8, 16, 16), training_domain=_domain())
    again = ModelCard.model_validate_json(card.model_dump_json())
    assert again.training_domain == _domain()
    older = card.model_dump(mode="json")
    del older["training_domain"]
    assert ModelCard.model_validate(older).training_domain is None


def test_a_range_is_ordered():
    with pytest.raises(ValueError, match="low end"):
        ValueRange(low=2, high=1)
    assert ValueRange(low=1.0, high=2.0).text("um") == "1.0-2.0 um"


def test_the_fingerprint_measures_the_noise_as_an_input_is_measured(tmp_path):
    """Training ranges and inputs use one estimator on the same planes: the fingerprint's slab pass finds the
    noise that measuring the file finds."""
    from fusemycell.preprocessing.fingerprint import scan_volume
    from fusemycell.preprocessing.noise import noise_sigma

    rng = np.random.default_rng(5)
    data = (300 + rng.normal(0, 12.0, (30, 40, 48))).clip(0, None).astype(np.uint16)
    data[10:20, 10:30, 10:38] += 2000  # a specimen: edges the MAD ignores
    write_volume(tmp_path / "v.tif", data, (2.0, 0.5, 0.5))
    scan = scan_volume(str(tmp_path / "v.tif"), pair="image_0_nucleus", kind="angle", channel="nucleus", slab_depth=7)
    planes = np.stack([data[z] for z in plane_indices(30)])
    assert scan.noise_sigma == pytest.approx(noise_sigma(planes), rel=1e-6)
    assert 10.0 < scan.noise_sigma < 14.0  # the noise put in (12), not the specimen
    assert scan.record()["noise_sigma"] == scan.noise_sigma
