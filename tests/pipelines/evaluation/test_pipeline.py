"""simulation -> ... -> evaluation, then inference, through real Kedro sessions in the test environment."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import tifffile
from kedro.io.core import DatasetError

from fusemycell.datasets.tiff_folder_dataset import PROVENANCE_VALUE
from fusemycell.io.formats import read_volume
from tests.conftest import inference_report, run_session

pytestmark = pytest.mark.slow  # whole pipeline chains, Kedro sessions or real processes


def test_evaluation_writes_reports_for_model_and_baselines(evaluated_project):
    reports = evaluated_project / "data" / "08_reporting" / "evaluation"
    per_volume = pd.read_csv(reports / "per_volume.csv")
    split = pd.read_csv(evaluated_project / "data" / "02_intermediate" / "split.csv")
    test_pairs = set(split.loc[split.split == "test", "pair"])
    assert set(per_volume["pair"]) == test_pairs
    assert set(per_volume["method"]) == {"model", "identity", "gaussian_blur"}
    identity = per_volume[per_volume.method == "identity"]
    assert (identity["n_ssim"] == 0).all() and (identity["n_iou"] == 0).all()
    assert per_volume[["ssim", "iou"]].notna().all().all()
    assert {"channel", "method", "n_ssim", "n_iou"} <= set(pd.read_csv(reports / "by_channel.csv").columns)
    assert {"study", "method"} <= set(pd.read_csv(reports / "by_study.csv").columns)
    report = json.loads((reports / "report.json").read_text())
    assert set(report["overall"]) == {"model", "identity", "gaussian_blur"}
    assert sorted(p.stem for p in (reports / "volumes").glob("*.png")) == sorted(test_pairs)
    assert (reports / "model_vs_baselines.png").stat().st_size > 1000


def test_test_predictions_are_in_the_challenge_format(evaluated_project):
    predictions = evaluated_project / "data" / "07_model_output" / "test_predictions"
    for path in predictions.glob("*.tif"):
        raw = read_volume(evaluated_project / "data" / "01_raw" / "synthetic" / path.name)
        prediction = read_volume(path)
        assert prediction.data.dtype == np.uint16 and prediction.shape == raw.shape
        assert prediction.spacing_zyx == raw.spacing_zyx
        assert prediction.metadata == {**raw.metadata, "fusemycell": PROVENANCE_VALUE}  # the provenance mark


def test_inference_contract_and_bad_inputs(evaluated_project):
    inputs = evaluated_project / "incoming"
    outputs = evaluated_project / "predictions"
    inputs.mkdir()
    raw = evaluated_project / "data" / "01_raw" / "synthetic"
    for name in ("image_0_nucleus_angle.tif", "image_3_membrane_angle.tif", "image_3_membrane_fused.tif"):
        shutil.copy(raw / name, inputs / name)
    (inputs / "broken.tif").write_text("not a tiff")
    tifffile.imwrite(inputs / "flat.tif", np.zeros((20, 20), np.uint16))
    with pytest.raises(DatasetError) as raised:
        run_session(evaluated_project, ["inference"], inference={"input_dir": str(inputs), "output_dir": str(outputs)})
    message = str(raised.value)
    assert "2 volume(s) could not be predicted or written (2 written" in message
    assert "broken.tif" in message and "flat.tif" in message
    report = inference_report(evaluated_project, outputs)
    assert report["status"] == "failed" and report["input"] == str(inputs.resolve())
    assert sorted(f["file"] for f in report["failures"]) == ["broken.tif", "flat.tif"]
    assert report["written"] == ["image_0_nucleus_angle.tif", "image_3_membrane_angle.tif"]
    written = sorted(p.name for p in outputs.iterdir())
    assert written == ["image_0_nucleus_angle.tif", "image_3_membrane_angle.tif"]  # fused skipped, no partial file
    for name in written:
        source, prediction = read_volume(inputs / name), read_volume(outputs / name)
        assert prediction.shape == source.shape and prediction.data.dtype == np.uint16
        assert prediction.spacing_zyx == source.spacing_zyx
        assert prediction.metadata == {**source.metadata, "fusemycell": PROVENANCE_VALUE}
        with tifffile.TiffFile(outputs / name) as tif:
            assert tif.is_bigtiff and tif.pages.first.is_tiled


def test_inference_with_the_onnx_backend(evaluated_project):
    inputs = evaluated_project / "incoming_onnx"
    inputs.mkdir()
    shutil.copy(evaluated_project / "data" / "01_raw" / "synthetic" / "image_2_nucleus_angle.tif", inputs)
    run_session(
        evaluated_project,
        ["inference"],
        inference={
            "input_dir": str(inputs),
            "output_dir": str(evaluated_project / "onnx_out"),
            "backend": "onnx",
            "onnx_path": str(evaluated_project / "data" / "06_models" / "fusemycell_unet.onnx"),
        },
    )
    torch_inputs = evaluated_project / "incoming_torch"
    shutil.copytree(inputs, torch_inputs)
    run_session(
        evaluated_project,
        ["inference"],
        inference={"input_dir": str(torch_inputs), "output_dir": str(evaluated_project / "torch_out")},
    )
    onnx = read_volume(evaluated_project / "onnx_out" / "image_2_nucleus_angle.tif").data.astype(int)
    torch_ = read_volume(evaluated_project / "torch_out" / "image_2_nucleus_angle.tif").data.astype(int)
    assert np.abs(onnx - torch_).max() <= 1


def test_inference_with_a_model_from_an_mlflow_uri(evaluated_project):
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{(evaluated_project / 'mlflow.db').as_posix()}")
    # the run that trained (and logged) the model, not a later inference run
    run = mlflow.search_runs(
        experiment_names=["fusemycell"], filter_string="tags.mlflow.runName LIKE '%training%'"
    ).iloc[0]
    inputs = evaluated_project / "incoming_mlflow"
    inputs.mkdir()
    shutil.copy(evaluated_project / "data" / "01_raw" / "synthetic" / "image_1_membrane_angle.tif", inputs)
    (evaluated_project / "data" / "06_models" / "fusemycell_unet.pt").rename(evaluated_project / "moved_away.pt")
    try:
        run_session(
            evaluated_project,
            ["inference"],
            inference={
                "input_dir": str(inputs),
                "output_dir": str(evaluated_project / "mlflow_out"),
                "model_uri": f"runs:/{run['run_id']}/model/fusemycell_unet.pt",
            },
        )
    finally:
        (evaluated_project / "moved_away.pt").rename(evaluated_project / "data" / "06_models" / "fusemycell_unet.pt")
    assert read_volume(evaluated_project / "mlflow_out" / "image_1_membrane_angle.tif").data.dtype == np.uint16


def test_test_pairs_missing_from_the_raw_folder_say_to_pass_raw_dir(evaluated_project):
    from fusemycell.io.pairs import pair_files
    from fusemycell.pipelines.evaluation.nodes import _test_pairs

    raw = evaluated_project / "data" / "01_raw" / "synthetic"
    split = pd.read_csv(evaluated_project / "data" / "02_intermediate" / "split.csv")
    listing = pair_files(sorted(raw.glob("*.tif")))
    assert sorted(_test_pairs(listing, split)) == sorted(split.loc[split.split == "test", "pair"])
    first = split[split.split == "test"].iloc[0]["pair"]
    without = pair_files([p for p in sorted(raw.glob("*.tif")) if not p.name.startswith(first + "_")])
    with pytest.raises(ValueError, match=f"made from {raw}.*{first} not in the raw folder.*raw_dir"):
        _test_pairs(without, split)
