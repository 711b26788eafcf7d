"""inference.output_format: ome-zarr writes the same prediction as TIFF output, as an OME-Zarr pyramid;
OME-Zarr single views are predicted like TIFF ones."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import zarr
from kedro.io.core import DatasetError

from fusemycell.datasets import VolumeFolderDataset
from fusemycell.inference.settings import InferenceSettings
from fusemycell.io.formats import read_volume
from fusemycell.io.ome_zarr import write_ome_zarr
from fusemycell.io.tiff import write_volume
from fusemycell.models.card import card_for
from fusemycell.models.config import UNetConfig
from fusemycell.models.model_file import TrainedModel
from fusemycell.models.unet import UNet3D
from fusemycell.pipelines.inference.nodes import plan_predictions
from tests.conftest import run_session


@pytest.fixture
def single_views(tmp_path):
    rng = np.random.default_rng(3)
    volume = (rng.random((10, 40, 36)) * 3000 + 200).astype(np.uint16)
    folder = tmp_path / "in"
    write_volume(folder / "image_5_nucleus_angle.tif", volume, (2.0, 0.4, 0.4), {"channel": "nucleus"})
    write_ome_zarr(folder / "image_6_nucleus_angle.ome.zarr", volume, (2.0, 0.4, 0.4), {"channel": "nucleus"})
    return folder


def _predict(folder, out, output_format):
    torch.manual_seed(0)
    config = UNetConfig(depth=2, base_channels=4, residual=False)
    model = TrainedModel(UNet3D(config), card_for(config, (8, 16, 16)))
    inputs = VolumeFolderDataset(path=folder).load()
    params = InferenceSettings(device="cpu", output_format=output_format, input_dir=str(folder), output_dir=str(out))
    planned = plan_predictions(inputs, model, params, str(folder.parent / "raw"))
    VolumeFolderDataset(path=out).save(planned)
    return sorted(planned)


def test_ome_zarr_output_equals_tiff_output_and_zarr_input_equals_tiff_input(single_views, tmp_path):
    assert _predict(single_views, tmp_path / "tiff", "tiff") == [
        "image_5_nucleus_angle.tif",
        "image_6_nucleus_angle.tif",
    ]
    assert _predict(single_views, tmp_path / "zarr", "ome-zarr") == [
        "image_5_nucleus_angle.ome.zarr",
        "image_6_nucleus_angle.ome.zarr",
    ]
    as_tiff = read_volume(tmp_path / "tiff" / "image_5_nucleus_angle.tif")
    as_zarr = read_volume(tmp_path / "zarr" / "image_5_nucleus_angle.ome.zarr")
    np.testing.assert_array_equal(as_zarr.data, as_tiff.data)
    assert as_zarr.spacing_zyx == pytest.approx(as_tiff.spacing_zyx)
    assert as_zarr.metadata["channel"] == "nucleus"
    # the OME-Zarr single view gives the prediction of the TIFF single view
    np.testing.assert_array_equal(read_volume(tmp_path / "tiff" / "image_6_nucleus_angle.tif").data, as_tiff.data)
    group = zarr.open_group(str(tmp_path / "zarr" / "image_5_nucleus_angle.ome.zarr"), mode="r")
    assert len(group.attrs["multiscales"][0]["datasets"]) >= 1


def test_an_ome_zarr_input_with_a_missing_chunk_is_reported_before_prediction(single_views, tmp_path):
    image = single_views / "image_6_nucleus_angle.ome.zarr"
    lost = sorted(p for p in (image / "0").rglob("*") if p.is_file() and not p.name.startswith((".z", "zarr.")))
    lost[0].unlink()  # its first z-slab
    torch.manual_seed(0)
    config = UNetConfig(depth=2, base_channels=4, residual=False)
    model = TrainedModel(UNet3D(config), card_for(config, (8, 16, 16)))
    out = tmp_path / "out"
    params = InferenceSettings(device="cpu", input_dir=str(single_views), output_dir=str(out))
    planned = plan_predictions(VolumeFolderDataset(path=single_views).load(), model, params, str(tmp_path / "raw"))
    assert list(planned) == ["image_5_nucleus_angle.tif"]  # refused before any prediction
    [failure] = planned.report["failures"]
    assert failure["file"] == image.name and "chunks of array '0'" in failure["problem"]
    dataset = VolumeFolderDataset(path=out, report_dir=str(tmp_path / "reports"))
    with pytest.raises(DatasetError, match=r"image_6_nucleus_angle.ome.zarr: .*missing"):
        dataset.save(planned)
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["image_5_nucleus_angle.tif"]
    [report] = (tmp_path / "reports").glob("*.json")
    assert json.loads(report.read_text())["status"] == "failed"


@pytest.mark.slow
def test_the_inference_pipeline_writes_ome_zarr_when_asked(evaluated_project):
    inputs = evaluated_project / "incoming_zarr"
    inputs.mkdir()
    shutil.copy(evaluated_project / "data" / "01_raw" / "synthetic" / "image_1_membrane_angle.tif", inputs)
    for output_format in ("tiff", "ome-zarr"):
        run_session(
            evaluated_project,
            ["inference"],
            inference={
                "input_dir": str(inputs),
                "output_dir": str(evaluated_project / f"out_{output_format}"),
                "output_format": output_format,
            },
        )
    tiff = read_volume(evaluated_project / "out_tiff" / "image_1_membrane_angle.tif")
    ome = read_volume(evaluated_project / "out_ome-zarr" / "image_1_membrane_angle.ome.zarr")
    np.testing.assert_array_equal(ome.data, tiff.data)
    assert ome.spacing_zyx == pytest.approx(tiff.spacing_zyx)


@pytest.mark.slow
def test_raw_pairs_as_ome_zarr_run_through_preprocessing_to_evaluation(tmp_path_factory):
    """The own-data chain on a raw folder of OME-Zarr angle/fused images (NGFF 0.5)."""
    import os

    import pandas as pd

    from tests.conftest import copy_project

    project = copy_project(tmp_path_factory.mktemp("zarr_pairs") / "project")
    previous = os.getcwd()
    os.chdir(project)
    try:
        run_session(project, ["simulation"])
        own = project / "data" / "01_raw" / "zarr"
        for path in sorted((project / "data" / "01_raw" / "synthetic").glob("*.tif")):
            volume = read_volume(path)
            write_ome_zarr(
                own / f"{path.stem}.ome.zarr", volume.data, volume.spacing_zyx, volume.metadata, version="0.5"
            )
        run_session(project, ["preprocessing", "patching", "training", "evaluation"], raw_dir=str(own))
    finally:
        os.chdir(previous)
    # own data (raw_dir data/01_raw/zarr): its artefacts in folders of its own
    per_volume = pd.read_csv(project / "data" / "08_reporting" / "zarr" / "evaluation" / "per_volume.csv")
    assert set(per_volume["method"]) == {"model", "identity", "gaussian_blur"} and per_volume["n_ssim"].notna().all()
    predictions = list((project / "data" / "07_model_output" / "zarr" / "test_predictions").glob("*.ome.zarr"))
    assert predictions and all(read_volume(p, lazy=True).data.dtype == np.uint16 for p in predictions)
