"""Inference nodes: an empty input folder is an error, not a silent success."""

import pytest

from fusemycell.errors import UserError
from fusemycell.inference.settings import InferenceSettings
from fusemycell.models.card import card_for
from fusemycell.models.config import UNetConfig
from fusemycell.models.model_file import TrainedModel
from fusemycell.models.unet import UNet3D
from fusemycell.pipelines.inference.nodes import plan_predictions


def test_an_empty_input_folder_is_an_error_naming_it(tmp_path):
    config = UNetConfig(depth=2, base_channels=4)
    model = TrainedModel(UNet3D(config), card_for(config))
    params = InferenceSettings(device="cpu", input_dir=str(tmp_path / "in"), output_dir=str(tmp_path / "out"))
    message = r"no \.tif/\.tiff file or \.ome\.zarr image in inference\.input_dir .*in; sub-folders"
    with pytest.raises(UserError, match=message) as raised:
        plan_predictions({}, model, params, str(tmp_path / "raw"))
    assert "no .tif/.tiff file or .ome.zarr image in INPUT" in raised.value.message({"inference.input_dir": "INPUT"})


def _outside_setup(tmp_path):
    import numpy as np
    import torch

    from fusemycell.datasets.volume_sources import VolumeSource
    from fusemycell.io.tiff import write_volume
    from fusemycell.models.domain import TrainingDomain, ValueRange

    torch.manual_seed(0)
    config = UNetConfig(depth=2, base_channels=4, spacing_zyx=(1.0, 0.5, 0.5))
    one = ValueRange(low=0.5, high=0.5)
    domain = TrainingDomain(
        volumes=1,
        spacing_zyx_um=(ValueRange(low=1.0, high=1.0), one, one),
        shape_zyx=(ValueRange(low=8, high=8), ValueRange(low=24, high=24), ValueRange(low=24, high=24)),
    )
    model = TrainedModel(UNet3D(config), card_for(config, (8, 16, 16), training_domain=domain))
    sources = {}
    for name, spacing in (
        ("image_1_nucleus_angle.tif", (1.0, 0.5, 0.5)),
        ("image_2_nucleus_angle.tif", (3.0, 0.5, 0.5)),
    ):
        data = np.random.default_rng(0).integers(100, 3000, (8, 24, 24), dtype=np.uint16)
        write_volume(tmp_path / "in" / name, data, spacing)
        sources[name] = VolumeSource(str(tmp_path / "in" / name))
    return model, sources


@pytest.mark.parametrize("mode", ["warn", "base", "refuse"])
def test_an_input_outside_the_training_domain_gets_one_line_and_its_mode(tmp_path, caplog, mode):
    import logging

    from fusemycell.inference.outside import ResidualBaseBackend

    (tmp_path / "in").mkdir()
    model, sources = _outside_setup(tmp_path)
    params = InferenceSettings(
        device="cpu", input_dir=str(tmp_path / "in"), output_dir=str(tmp_path / "out"), outside_training=mode
    )
    with caplog.at_level(logging.INFO, logger="fusemycell.pipelines.inference.nodes"):
        plan = plan_predictions(sources, model, params, str(tmp_path / "raw"))
    lines = [r.getMessage() for r in caplog.records if "outside the training range" in r.getMessage()]
    assert len(lines) == 1 and lines[0].startswith(
        "image_2_nucleus_angle.tif: voxel size z 3.0 um is outside the training range 1.0 um; "
    )
    summary = plan.report["outside_training"]
    assert summary["mode"] == mode and summary["checked"] is True
    assert [entry["file"] for entry in summary["inputs"]] == ["image_2_nucleus_angle.tif"]
    assert summary["inputs"][0]["line"] == lines[0]
    backends = {name: call.args[1] for name, call in plan.items()}
    inside = backends["image_1_nucleus_angle.tif"]
    assert not isinstance(inside, ResidualBaseBackend)
    if mode == "refuse":
        assert "image_2_nucleus_angle.tif" not in plan
        (failure,) = plan.report["failures"]
        assert failure["file"] == "image_2_nucleus_angle.tif" and "voxel size z 3.0 um" in failure["problem"]
        assert "skipped (inference.outside_training: refuse" in failure["problem"]
    elif mode == "base":
        assert isinstance(backends["image_2_nucleus_angle.tif"], ResidualBaseBackend)
        assert "residual base" in lines[0]
    else:
        assert backends["image_2_nucleus_angle.tif"] is inside
        assert lines[0].endswith("the prediction may be worse than the input")


@pytest.mark.parametrize("tile", [None, (8, 24, 24)])
def test_the_report_gives_the_tiling_that_is_used(tmp_path, tile):
    """Exact tiles are planned per volume and never blended: no overlap, and no tile the run did not use."""
    (tmp_path / "in").mkdir()
    model, sources = _outside_setup(tmp_path)  # a tile-invariant network (normalization none): exact tiling
    common = {"device": "cpu", "input_dir": str(tmp_path / "in"), "output_dir": str(tmp_path / "out"), "tile_zyx": tile}
    report = plan_predictions(sources, model, InferenceSettings(**common), str(tmp_path / "raw")).report
    assert report["tiling"] == "exact" and report["overlap"] is None
    assert report["tile_zyx"] == (list(tile) if tile else None)
    assert ("memory_gb" in report["tiles"]) is (tile is None)
    blended = plan_predictions(sources, model, InferenceSettings(**common, tiling="blend"), str(tmp_path / "raw"))
    assert blended.report["tiling"] == "blend" and blended.report["overlap"] == 0.5
    assert blended.report["tile_zyx"] == list(tile or model.card.default_tile_zyx)
