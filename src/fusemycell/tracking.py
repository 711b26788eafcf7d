"""Small MLflow helpers: log to the run kedro-mlflow opened, from any thread or process, or do nothing.

kedro-mlflow opens one run per ``kedro run``. Code that reports into it (the
training engine's epochs, the memory monitor) goes through :class:`RunLogger`,
which addresses the run by id, so it also works from a spawned DDP worker.
Without an active run (tests, notebooks, MLflow disabled) nothing is logged.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunLogger:
    """Logs metrics and artifacts into one MLflow run; picklable (holds only ids)."""

    run_id: str
    tracking_uri: str

    @classmethod
    def current(cls) -> RunLogger | None:
        """The active MLflow run, if any."""
        try:
            import mlflow
        except ImportError:  # pragma: no cover - mlflow is a dependency
            return None
        run = mlflow.active_run()
        if run is None:
            return None
        return cls(run_id=run.info.run_id, tracking_uri=mlflow.get_tracking_uri())

    def _client(self) -> Any:
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=self.tracking_uri)

    def metrics(self, values: dict[str, float], step: int | None = None) -> None:
        """Log several metrics at once (NaN values are skipped)."""
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        batch = [
            Metric(key=key, value=float(value), timestamp=stamp, step=step or 0)
            for key, value in values.items()
            if not math.isnan(float(value))  # NaN is not a measurement
        ]
        if batch:
            self._client().log_batch(self.run_id, metrics=batch)

    def artifact(self, path: str | Path, folder: str | None = None) -> None:
        """Upload a file as an artifact of the run."""
        self._client().log_artifact(self.run_id, str(path), artifact_path=folder)

    def text(self, content: str, artifact_file: str) -> None:
        """Write ``content`` as the artifact ``artifact_file`` of the run (``memory/peaks.csv``)."""
        self._client().log_text(self.run_id, content, artifact_file)

    def tags(self, values: dict[str, str]) -> None:
        """Set tags of the run (they may change; parameters may not)."""
        client = self._client()
        for key, value in values.items():
            client.set_tag(self.run_id, key, value)


def log_metrics(values: dict[str, float], step: int | None = None) -> bool:
    """Log to the active run; returns False (and logs nothing) when there is none."""
    run = RunLogger.current()
    if run is None:
        return False
    try:
        run.metrics(values, step)
    except Exception as exc:  # noqa: BLE001 - tracking must never break a pipeline
        logger.warning("could not log metrics to MLflow: %s", exc)
        return False
    return True


def set_tags(values: dict[str, str]) -> bool:
    """Tag the active run; returns False (and tags nothing) when there is none."""
    run = RunLogger.current()
    if run is None:
        return False
    try:
        run.tags(values)
    except Exception as exc:  # noqa: BLE001 - tracking must never break a pipeline
        logger.warning("could not tag the MLflow run: %s", exc)
        return False
    return True


@dataclass(frozen=True)
class EpochMetricsLogger:
    """Epoch callback for the training engine: every field of an epoch's metrics, with ``step = epoch``."""

    run: RunLogger

    def __call__(self, metrics: Any) -> None:
        values = {key: value for key, value in vars(metrics).items() if key != "epoch"}
        try:
            self.run.metrics(values, step=int(metrics.epoch))
        except Exception as exc:  # noqa: BLE001 - tracking must never stop training
            logger.warning("could not log epoch %s to MLflow: %s", metrics.epoch, exc)


def is_artifact_uri(location: str) -> bool:
    """``runs:/...``, ``models:/...`` or ``mlflow-artifacts:...``: a file kept by the tracking server."""
    return str(location).startswith(("runs:/", "models:/", "mlflow-artifacts:"))


def fetch_artifact(uri: str, destination: str | Path) -> str:
    """Download the artifact ``uri`` into ``destination``; the local path.

    Raises
    ------
    FileNotFoundError
        Naming the URI and MLflow's reason.
    """
    import mlflow

    try:
        return mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(destination))
    except Exception as exc:  # noqa: BLE001 - MLflow raises many types for a bad URI
        raise FileNotFoundError(f"{uri}: could not fetch it from MLflow ({exc})") from exc
