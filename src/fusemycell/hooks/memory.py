"""Peak memory of every node, its run and the save of its outputs: one table at the end of the run.

Heavy work often runs inside a dataset's ``save`` (lazy plans written plane by plane: predictions,
normalised volumes, patch stores, the ONNX export), after Kedro's ``after_node_run``. Sampling
therefore goes on until the node's last output is saved (``after_dataset_saved``), so the peak is
the real one; a save that fails ends it in ``on_pipeline_error``, which names the dataset.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

from kedro.framework.hooks import hook_impl

from fusemycell.memory import MemoryPeak
from fusemycell.tracking import RunLogger, log_metrics

logger = logging.getLogger(__name__)

#: Seconds between two memory samples, unless ``monitor_interval`` is set in the parameters.
DEFAULT_INTERVAL_S = 0.5


@dataclass
class NodeMemory:
    """Peak memory while one node ran."""

    node: str
    peak_rss_mb: float
    peak_device_mb: float
    samples: int


def memory_table(peaks: list[NodeMemory]) -> list[str]:
    """The peaks as aligned lines, in the order the nodes ran; the largest is marked."""
    if not peaks:
        return []
    width = max(len(p.node) for p in peaks)
    device = any(p.peak_device_mb for p in peaks)
    top = max(peaks, key=lambda p: p.peak_rss_mb)
    header = f"  {'node':<{width}}  {'RSS MB':>8}" + (f"  {'accel. MB':>9}" if device else "")
    lines = ["memory peaks (each node's run and the save of its outputs):", header]
    for peak in peaks:
        line = f"  {peak.node:<{width}}  {peak.peak_rss_mb:>8.0f}"
        if device:
            line += f"  {peak.peak_device_mb:>9.0f}"
        lines.append(line + ("  <- largest" if peak is top and len(peaks) > 1 else ""))
    return lines


def memory_csv(peaks: list[NodeMemory]) -> str:
    """The peaks as CSV (``node,peak_rss_mb,peak_device_mb``), as logged to MLflow."""
    rows = [f"{p.node},{p.peak_rss_mb:.1f},{p.peak_device_mb:.1f}" for p in peaks]
    return "\n".join(["node,peak_rss_mb,peak_device_mb", *rows]) + "\n"


class _Sampler(threading.Thread):
    """Samples :class:`~fusemycell.memory.MemoryPeak` (this process and its workers) every ``interval`` seconds."""

    def __init__(self, interval: float):
        super().__init__(daemon=True)
        self.interval = interval
        self.stopped = threading.Event()
        self.peak = MemoryPeak(children=True)

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            self.peak.sample()

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=5)
        self.peak.sample()


class MemoryMonitorHooks:
    """Samples memory while each node runs and while its outputs are saved; one table of peaks at the end.

    The sampling interval is the ``monitor_interval`` parameter (seconds). Peaks are kept in
    :attr:`peaks`, printed as one table when the run ends, and logged to the MLflow run as
    ``memory.<pipeline>.<node>.peak_rss_mb`` (and ``peak_device_mb`` on CUDA or MPS) and as the
    table ``memory/peaks.csv``.
    """

    def __init__(self, interval: float = DEFAULT_INTERVAL_S):
        self.interval = interval
        self.peaks: dict[str, NodeMemory] = {}
        self._samplers: dict[str, _Sampler] = {}
        self._unsaved: dict[str, set[str]] = {}
        self._saving: dict[str, str] = {}
        self._run: RunLogger | None = None

    @hook_impl
    def after_context_created(self, context: Any) -> None:
        """Read ``monitor_interval`` from the parameters."""
        try:
            value = context.params.get("monitor_interval", self.interval)
            self.interval = float(value) if value else self.interval
        except Exception:  # noqa: BLE001 - parameters that fail to load or validate are reported elsewhere
            return

    @hook_impl
    def before_pipeline_run(self) -> None:
        self.peaks = {}
        self._run = None

    @hook_impl
    def before_node_run(self, node: Any) -> None:
        """Start sampling."""
        sampler = _Sampler(self.interval)
        self._samplers[node.name] = sampler
        self._unsaved[node.name] = set(getattr(node, "outputs", None) or [])
        self._run = self._run or RunLogger.current()
        sampler.start()

    @hook_impl
    def after_node_run(self, node: Any) -> None:
        """A node without outputs is done; the others are sampled on while their outputs are saved."""
        if not self._unsaved.get(node.name):
            self._finish(node.name)

    @hook_impl
    def before_dataset_saved(self, dataset_name: str, node: Any) -> None:
        """Remember what is being saved (named if the save fails)."""
        self._saving[node.name] = dataset_name

    @hook_impl
    def after_dataset_saved(self, dataset_name: str, node: Any) -> None:
        """The node's last saved output ends its measurement."""
        unsaved = self._unsaved.get(node.name)
        if unsaved is None:
            return
        unsaved.discard(dataset_name)
        if not unsaved:
            self._finish(node.name)

    @hook_impl
    def on_node_error(self, node: Any) -> None:
        """A failing node's peak is recorded too (it may be why it failed)."""
        self._finish(node.name)

    @hook_impl
    def on_pipeline_error(self) -> None:
        """A save that failed: its node's peak is recorded, naming the dataset."""
        for name in list(self._samplers):
            dataset = self._saving.get(name)
            if dataset is not None:
                logger.error("memory: %s failed while saving %s", name, dataset)
            self._finish(name)

    @hook_impl
    def after_pipeline_run(self) -> None:
        """Print the table of peaks and log it to the MLflow run."""
        peaks = list(self.peaks.values())
        if not peaks:
            return
        print("\n" + "\n".join(memory_table(peaks)))
        if self._run is not None:
            try:
                self._run.text(memory_csv(peaks), "memory/peaks.csv")
            except Exception as exc:  # noqa: BLE001 - tracking never fails a finished run
                logger.warning("could not log the memory table to MLflow: %s", exc)

    def _finish(self, name: str) -> None:
        sampler = self._samplers.pop(name, None)
        self._unsaved.pop(name, None)
        self._saving.pop(name, None)
        if sampler is None:
            return
        sampler.stop()
        peak = sampler.peak
        record = NodeMemory(name, peak.rss_mb, peak.peak_device_mb, peak.samples)
        self.peaks[name] = record
        metrics = {f"memory.{name}.peak_rss_mb": record.peak_rss_mb}
        if record.peak_device_mb:
            metrics[f"memory.{name}.peak_device_mb"] = record.peak_device_mb
        log_metrics(metrics)
