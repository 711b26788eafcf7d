"""Nodes of the evaluation pipeline: thin wrappers around :mod:`fusemycell.evaluation` and ``inference``."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from fusemycell.datasets.raw_pairs_dataset import PairSources
from fusemycell.datasets.volume_sources import VolumeSource
from fusemycell.errors import Setting, UserError
from fusemycell.evaluation.config import EvaluationConfig
from fusemycell.evaluation.figures import summary_figure, volume_figure
from fusemycell.evaluation.scoring import score_pair
from fusemycell.inference.apply import ChannelBackends, InferenceSettings, predict_file
from fusemycell.io.digest import content_digest
from fusemycell.io.pairs import PairListing
from fusemycell.io.volume import Volume
from fusemycell.metrics.ssim import image_statistics
from fusemycell.models.model_file import TrainedModel
from fusemycell.parameters import Validated
from fusemycell.preprocessing.split import check_split_files
from fusemycell.tracking import log_metrics

logger = logging.getLogger(__name__)


def _test_pairs(raw_pairs: PairListing, volume_split: pd.DataFrame) -> dict[str, Any]:
    """The test pairs of the split, checked by content to be the very files the split was made from."""
    test = volume_split[volume_split["split"] == "test"]
    if test.empty:
        raise UserError(
            "no test volume to evaluate: check {test_fraction} and re-run preprocessing",
            test_fraction=Setting("preprocessing.split.test_fraction"),
        )
    folders = sorted({str(Path(pair.angle).parent) for pair in raw_pairs.values() if pair.angle})
    check_split_files(test, raw_pairs, content_digest, where=f"the raw folder {', '.join(folders) or '(empty)'}")
    return {key: raw_pairs[key] for key in sorted(test["pair"])}


def predict_test_volumes(
    raw_pairs: PairListing,
    volume_split: pd.DataFrame,
    trained_model: TrainedModel,
    inference: Validated[InferenceSettings],
) -> dict[str, Callable[[], Volume]]:
    """Predictions of the held-out test volumes, produced one at a time while saving (same path as inference)."""
    backends = ChannelBackends(trained_model, inference, onnx_path=inference.onnx_path)  # the guard's scale per channel
    pairs = _test_pairs(raw_pairs, volume_split)
    logger.info(
        "evaluating %d test volumes of %s",
        len(pairs),
        ", ".join(sorted({str(Path(p.angle).parent) for p in pairs.values()})),
    )
    return {
        Path(pair.angle).name: partial(
            predict_file, pair.angle, backends(Path(pair.angle).name), inference, trained_model.card
        )
        for pair in pairs.values()
    }


def _volumes(raw_pairs: PairSources, key: str, prediction: VolumeSource) -> tuple[Volume, Volume, Volume]:
    """The pair's angle and fused volumes and the prediction, read lazily."""
    angle, fused = raw_pairs.sources(key)
    if angle is None or fused is None:
        raise UserError(
            "{key}: the test pair lacks its {kind} file", key=key, kind="angle" if angle is None else "fused"
        )
    return angle(), fused(), prediction()


def score_test_volumes(
    raw_pairs: PairSources,
    volume_split: pd.DataFrame,
    test_predictions: Mapping[str, VolumeSource],
    evaluation: Validated[EvaluationConfig],
) -> pd.DataFrame:
    """SSIM, N_SSIM, IoU and N_IoU of the model and both baselines for every test volume."""
    rows = []
    for key, pair in _test_pairs(raw_pairs, volume_split).items():
        prediction_source = test_predictions.get(Path(pair.angle).name)
        if prediction_source is None:
            raise UserError("no prediction for {angle}; run the evaluation pipeline from its start", angle=pair.angle)
        angle, fused, prediction = _volumes(raw_pairs, key, prediction_source)
        spacing = angle.spacing_zyx
        scores = score_pair(
            angle.data,
            fused.data,
            prediction.data,
            pair.channel,
            blur_sigmas=evaluation.blur_sigma_voxels,
            segmenter=evaluation.segmenter,
            anisotropy=spacing[0] / spacing[2],
            with_iou=evaluation.iou,
        )
        study = str(fused.metadata.get("study", ""))
        for row in scores:
            rows.append({"pair": key, "channel": pair.channel, "study": study, "angle_file": pair.angle, **row})
        model = next(r for r in scores if r["method"] == "model")
        logger.info("%s: N_SSIM %.4f, N_IoU %.4f (SSIM %.4f)", key, model["n_ssim"], model["n_iou"], model["ssim"])
    return pd.DataFrame(rows)


def summarize_evaluation(evaluation_metrics: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Means per channel and per study for every method; the headline numbers also go to MLflow."""
    columns = ["ssim", "n_ssim", "iou", "n_iou"]
    by_channel = evaluation_metrics.groupby(["channel", "method"], as_index=False)[columns].mean()
    by_study = evaluation_metrics.groupby(["study", "method"], as_index=False)[columns].mean()
    report: dict[str, Any] = {
        "volumes": int(evaluation_metrics["pair"].nunique()),
        "raw_folders": sorted({str(Path(f).parent) for f in evaluation_metrics["angle_file"]}),
        "per_channel": {},
    }
    for row in by_channel.itertuples():
        report["per_channel"].setdefault(row.channel, {})[row.method] = {c: float(getattr(row, c)) for c in columns}
    overall = evaluation_metrics.groupby("method")[columns].mean()
    report["overall"] = {method: overall.loc[method].to_dict() for method in overall.index}
    metrics = {
        f"test.{row.channel}.{row.method}.{c}": float(getattr(row, c))
        for row in by_channel.itertuples()
        for c in ("n_ssim", "n_iou")
    }
    metrics.update({f"test.{method}.{c}": float(overall.loc[method, c]) for method in overall.index for c in columns})
    log_metrics(metrics)
    model, blur = report["overall"].get("model", {}), report["overall"].get("gaussian_blur", {})
    logger.info(
        "test N_SSIM: model %.4f, Gaussian blur %.4f, identity 0",
        model.get("n_ssim", float("nan")),
        blur.get("n_ssim", float("nan")),
    )
    return by_channel, by_study, report


def plot_test_volumes(
    raw_pairs: PairSources, volume_split: pd.DataFrame, test_predictions: Mapping[str, VolumeSource]
) -> dict[str, Callable[[], Figure]]:
    """One figure per test volume, drawn while saving (one in memory at a time)."""

    def draw(key: str, prediction: VolumeSource) -> Figure:
        angle, fused, predicted = _volumes(raw_pairs, key, prediction)
        images = {"input": angle, "prediction": predicted, "ground truth": fused}
        statistics = {name: image_statistics(volume.data) for name, volume in images.items()}
        return volume_figure(key, {n: v.data for n, v in images.items()}, statistics, angle.spacing_zyx)

    return {
        key: partial(draw, key, test_predictions[Path(pair.angle).name])
        for key, pair in _test_pairs(raw_pairs, volume_split).items()
    }


def plot_evaluation_summary(evaluation_metrics: pd.DataFrame) -> Figure:
    """Model versus baselines, per channel."""
    return summary_figure(evaluation_metrics)
