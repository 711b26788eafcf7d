"""The bioimage.io package: valid for bioimageio.core (offline), the same answer as our inference, honest refusals."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
import torch
import yaml

from fusemycell.export.bioimageio import (
    CHALLENGE_CITATION,
    BioimageioExportError,
    build_package,
    export_facts,
    save_package,
)
from fusemycell.models.card import card_for
from fusemycell.models.config import UNetConfig
from fusemycell.models.model_file import TrainedModel
from fusemycell.models.unet import UNet3D


def _model(card_fields: dict | None = None, **config) -> TrainedModel:
    torch.manual_seed(0)
    unet = UNetConfig(**{"depth": 2, "base_channels": 4, "spacing_zyx": (2.0, 0.4, 0.4), **config})
    network = UNet3D(unet)
    with torch.no_grad():  # an untrained residual network is the identity: perturb it into a real answer
        for parameter in network.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return TrainedModel(network, card_for(unet, (8, 16, 16), **(card_fields or {})))


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    patch = (np.random.default_rng(1).random((9, 19, 17)) * 3000 + 100).astype(np.float32)
    return save_package(build_package(_model(), patch), tmp_path_factory.mktemp("pkg") / "model.bioimageio.zip")


def test_bioimageio_core_model_test_passes_offline_on_both_weight_formats(package):
    from bioimageio.core import test_model

    summary = test_model(package)
    failures = [(d.name, d.errors) for d in summary.details if d.status != "passed"]
    assert summary.status == "passed", failures
    reproduced = {d.name for d in summary.details if d.name.startswith("Reproduce test outputs")}
    assert reproduced == {
        "Reproduce test outputs from test inputs (torchscript)",
        "Reproduce test outputs from test inputs (onnx)",
    }


def test_the_package_describes_the_challenge_normalisation_and_cites_the_challenge(package):
    with zipfile.ZipFile(package) as archive:
        names = set(archive.namelist())
        rdf = yaml.safe_load(archive.read("rdf.yaml"))
    assert {"rdf.yaml", "test_input.npy", "test_output.npy", "cover.png", "README.md"} <= names
    assert rdf["format_version"].startswith("0.5") and rdf["type"] == "model"
    assert set(rdf["weights"]) == {"torchscript", "onnx"}
    steps = rdf["inputs"][0]["preprocessing"]
    # the spec adds float32 casts around the normalisation; the normalisation is the challenge's
    assert [step["id"] for step in steps if step["id"] != "ensure_dtype"] == ["scale_range"]
    preprocessing = next(step for step in steps if step["id"] == "scale_range")
    assert preprocessing["kwargs"]["min_percentile"] == 2.0 and preprocessing["kwargs"]["max_percentile"] == 99.8
    assert preprocessing["kwargs"]["axes"] == ["z", "y", "x"]  # per sample, over the whole volume
    assert "voxel size of 2 x 0.4 x 0.4 um" in rdf["inputs"][0]["description"]
    assert any(c.get("url") == CHALLENGE_CITATION["url"] for c in rdf["cite"])
    # the mapping back to grey levels (the input's percentiles) is not expressible: none, and the page says so
    assert all(step["id"] == "ensure_dtype" for step in rdf["outputs"][0].get("postprocessing", []))


def test_the_package_answers_as_our_inference_does(package, tmp_path):
    """Our file inference on the test input, mapped back to uint16, equals the package's output mapped the same way."""
    from fusemycell.inference.apply import InferenceSettings, make_backend, predict_file
    from fusemycell.inference.transform import MappedToUint16, output_mapping
    from fusemycell.io.tiff import write_volume
    from fusemycell.normalization import NormalizationStats

    with zipfile.ZipFile(package) as archive:
        archive.extract("test_input.npy", tmp_path)
        archive.extract("test_output.npy", tmp_path)
    test_input = np.load(tmp_path / "test_input.npy")[0, 0]
    test_output = np.load(tmp_path / "test_output.npy")[0, 0]
    write_volume(tmp_path / "single_view.tif", test_input, (2.0, 0.4, 0.4))
    model = _model()
    settings = InferenceSettings(device="cpu", tile_zyx=tuple(test_input.shape), min_output_range=1, amp=False)
    ours = predict_file(str(tmp_path / "single_view.tif"), make_backend(model, settings), settings, model.card)
    ours_planes = np.stack([ours.data[z] for z in range(test_input.shape[0])])
    low, high = np.percentile(test_input.astype(np.float64), (2.0, 99.8))
    mapped = MappedToUint16(test_output, *output_mapping(NormalizationStats(low=low, high=high), 1, "test_input"))
    theirs = np.stack([mapped[z] for z in range(test_input.shape[0])])
    assert np.abs(ours_planes.astype(int) - theirs.astype(int)).max() <= 1  # rounding of float32 at .5


def _position_model() -> TrainedModel:
    from fusemycell.models.card import InputChannel
    from fusemycell.position import PositionChannels

    channels = (
        InputChannel(name="single_view", description="v"),
        InputChannel(name="surface_distance", description="d"),
    )
    position = PositionChannels(enabled=True, channels=("surface_distance",))
    return _model({"input_channels": channels, "position": position}, in_channels=2, out_channels=1)


def test_computed_input_channels_are_refused_saying_what_is_missing():
    with pytest.raises(BioimageioExportError, match="2 input channels computed from the single view"):
        build_package(_position_model(), np.ones((8, 16, 16), np.float32))


def test_the_training_pipeline_keeps_why_a_position_model_has_no_package(tmp_path):
    from kedro.io.core import DatasetError

    from fusemycell.datasets.bioimageio_dataset import BioimageioPackageDataset
    from fusemycell.export.bioimageio import NotExported
    from fusemycell.pipelines.training.export_nodes import export_bioimageio_package

    target = tmp_path / "model.bioimageio.zip"
    target.write_bytes(b"a package of an earlier model")
    outcome = export_bioimageio_package(_position_model(), None)  # type: ignore[arg-type]
    assert isinstance(outcome, NotExported) and "surface_distance" in outcome.reason
    dataset = BioimageioPackageDataset(filepath=str(target))
    dataset.save(outcome)
    assert not target.exists()  # the stale package of another model is gone
    with pytest.raises(DatasetError, match="not exported: .*position channels"):
        dataset.load()


def test_a_package_whose_weights_answer_differently_is_not_written(monkeypatch, tmp_path):
    import fusemycell.export.bioimageio as export
    from fusemycell.inference.onnx_backend import export_onnx

    other = _model(residual=False)  # another network behind the ONNX file (untrained residual ones are the identity)
    monkeypatch.setattr(export, "_write_onnx", lambda model, path: export_onnx(other, path))
    staging = tmp_path / "staging"
    staging.mkdir()
    monkeypatch.setattr(export.tempfile, "mkdtemp", lambda prefix: str(staging))
    with pytest.raises(BioimageioExportError, match="onnx weights answer the test input differently"):
        build_package(_model(), (np.random.default_rng(2).random((8, 16, 16)) * 100).astype(np.float32))
    assert not staging.exists()  # nothing staged is left to be saved


def test_a_resampled_voxel_size_is_rounded_for_people_and_the_description_fits_the_spec(tmp_path):
    patch = (np.random.default_rng(3).random((8, 16, 16)) * 1000 + 100).astype(np.float32)
    model = _model(spacing_zyx=(1.0, 0.6066666666666667, 0.6066666666666667))  # 0.6 um on a 42 x 0.39 um extent
    path = save_package(build_package(model, patch), tmp_path / "resampled.bioimageio.zip")
    with zipfile.ZipFile(path) as archive:
        rdf = yaml.safe_load(archive.read("rdf.yaml"))
        documentation = archive.read("README.md").decode()
    description = rdf["inputs"][0]["description"]
    assert len(description) <= 128 and "voxel size of 1 x 0.607 x 0.607 um" in description
    assert "0.607" in documentation and "0.6066" not in documentation


def test_a_package_the_export_refuses_leaves_its_reason_and_the_run_goes_on(monkeypatch):
    import fusemycell.export.bioimageio as export
    from fusemycell.export.bioimageio import NotExported
    from fusemycell.pipelines.training.export_nodes import export_bioimageio_package

    def rejected(facts, folder, name):
        from bioimageio.spec.model import v0_5 as spec

        return spec.InputTensorDescr(id=spec.TensorId("x"), description="y" * 129, axes=[])

    monkeypatch.setattr(export, "_describe", rejected)
    store = [(np.ones((8, 16, 16), np.float32), np.ones((8, 16, 16), np.float32))]
    outcome = export_bioimageio_package(_model(), store)  # type: ignore[arg-type]
    assert isinstance(outcome, NotExported)
    assert "spec rejects the package's description" in outcome.reason and "128 characters" in outcome.reason


def test_normalisation_and_patch_are_read_through_one_adapter():
    facts = export_facts(_model())
    assert (facts.low_percentile, facts.high_percentile) == (2.0, 99.8)
    assert facts.patch_size_zyx == (8, 16, 16) and facts.in_channels == 1 and facts.size_multiple == (1, 2, 2)
