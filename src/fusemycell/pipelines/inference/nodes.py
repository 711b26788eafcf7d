"""Nodes of the inference pipeline: the challenge contract, a folder of single views in, predictions out."""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from fusemycell.configuration import load_config
from fusemycell.inference.apply import InferenceSettings, make_backend, predict_file, predict_in_memory
from fusemycell.io.tiff import VolumeFormatError, raw_dtype_problem, read_info
from fusemycell.models.checkpoint import TrainedModel

logger = logging.getLogger(__name__)


def plan_predictions(
    inference_inputs: dict[str, str], inference_model: TrainedModel, inference: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Every readable 3D single view of the input folder, to be predicted under its own name.

    Files that cannot be read, are not 3D or are not of a raw voxel type (float64,
    signed integers) are reported by name and left out; the others are still
    predicted. ``*_fused.tif`` files are targets, not inputs, and are skipped.
    Predictions are computed while the output dataset writes them; an input whose
    voxels turn out to be NaN/Inf or constant fails there, naming the file, after
    the other predictions are written.
    """
    settings = load_config(InferenceSettings, inference, "inference")
    input_dir, output_dir = inference.get("input_dir"), inference.get("output_dir")
    if input_dir and output_dir and Path(input_dir).resolve() == Path(output_dir).resolve():
        raise ValueError(f"inference.output_dir is the input folder {input_dir}: predictions would overwrite inputs")
    if not inference_inputs:
        raise ValueError(
            f"no .tif/.tiff file in the inference input folder {input_dir or '(the raw folder)'}; "
            "sub-folders are not searched: set --params inference.input_dir=FOLDER"
        )
    backend = make_backend(inference_model, settings, inference.get("onnx_path"))
    planned: dict[str, Any] = {}
    failures, skipped = [], []
    for name, path in inference_inputs.items():
        if Path(name).stem.endswith("_fused"):
            skipped.append(name)
            continue
        try:
            info = read_info(path)
            problem = raw_dtype_problem(info.dtype)
            if problem is not None:
                raise VolumeFormatError(f"{path}: {problem}")
        except VolumeFormatError as exc:
            failures.append({"file": name, "problem": str(exc)})
            logger.error("%s", exc)
            continue
        planned[name] = partial(predict_file, path, backend, settings, inference_model.card)
    if skipped:
        logger.info("skipped %d fused volume(s) (targets, not single views): %s", len(skipped), ", ".join(skipped))
    logger.info("predicting %d volume(s) with the %s backend", len(planned), settings.backend)
    report = {"predicted": sorted(planned), "skipped_fused": skipped, "failures": failures}
    return planned, report


def fail_on_unreadable_inputs(inference_report: dict[str, Any]) -> None:
    """End the run non-zero, naming every input that could not be predicted."""
    failures = inference_report["failures"]
    if failures:
        listing = "\n".join(f"  - {f['file']}: {f['problem']}" for f in failures)
        raise RuntimeError(
            f"{len(failures)} input(s) could not be predicted ({len(inference_report['predicted'])} were):\n{listing}"
        )


def predict_single_view_array(
    single_view: np.ndarray, trained_model: TrainedModel, inference: dict[str, Any]
) -> np.ndarray:
    """In-memory prediction of one ZYX array: the inference pipeline packaged as the MLflow model."""
    settings = load_config(InferenceSettings, inference, "inference")
    return predict_in_memory(single_view, trained_model, settings, onnx_path=inference.get("onnx_path"))
