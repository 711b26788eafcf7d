"""Progress: a bar with rate and ETA on a terminal, one summary line in logs otherwise."""

import logging
import re
import threading

import numpy as np
import pytest

from fusemycell import progress as progress_module
from fusemycell.inference.predictor import predict_array
from fusemycell.inference.tiling import TileSettings
from fusemycell.progress import Progress, listen, progress_mode, track

SUMMARY = re.compile(r"^(?P<what>.+): (?P<count>\d+) (?P<units>\w+) in [\d.]+ s \([\d.e+inf]+ (?P<unit>\w+)/s\)$")


def _summaries(caplog):
    return [SUMMARY.match(r.getMessage()) for r in caplog.records if r.name == "fusemycell.progress"]


def test_auto_mode_is_a_log_line_when_not_on_a_terminal(monkeypatch):
    monkeypatch.delenv("FUSEMYCELL_PROGRESS", raising=False)
    assert progress_mode() == "log"  # pytest captures standard error: not a terminal


def test_log_mode_yields_everything_and_writes_one_summary_line(monkeypatch, caplog, capsys):
    monkeypatch.setenv("FUSEMYCELL_PROGRESS", "log")
    with caplog.at_level(logging.INFO, logger="fusemycell.progress"):
        assert list(track(range(5), "scanning", unit="file")) == [0, 1, 2, 3, 4]
    (summary,) = _summaries(caplog)
    assert summary and summary["what"] == "scanning" and summary["count"] == "5"
    assert summary["units"] == "files" and summary["unit"] == "file"
    assert capsys.readouterr().err == ""  # no bar


def test_bar_mode_shows_count_rate_and_eta_then_the_summary(monkeypatch, caplog, capsys):
    monkeypatch.setenv("FUSEMYCELL_PROGRESS", "bar")
    with caplog.at_level(logging.INFO, logger="fusemycell.progress"):
        assert sum(track([1, 2, 3], "epoch 1/4", unit="batch")) == 6
    err = capsys.readouterr().err
    assert "epoch 1/4" in err and "/3" in err  # count out of the total
    assert "batch/s" in err and "<" in err  # rate, and tqdm's elapsed<remaining (the ETA)
    (summary,) = _summaries(caplog)
    assert summary and summary["count"] == "3" and summary["units"] == "batches"


def test_off_mode_and_disabled_ranks_show_nothing(monkeypatch, caplog, capsys):
    monkeypatch.setenv("FUSEMYCELL_PROGRESS", "off")
    with caplog.at_level(logging.INFO, logger="fusemycell.progress"):
        assert list(track("abc", "quiet")) == ["a", "b", "c"]
    monkeypatch.setenv("FUSEMYCELL_PROGRESS", "bar")
    with caplog.at_level(logging.INFO, logger="fusemycell.progress"):
        assert list(track("abc", "rank 1", enabled=False)) == ["a", "b", "c"]
    assert _summaries(caplog) == [] and capsys.readouterr().err == ""


def test_a_failed_or_abandoned_loop_claims_no_summary(monkeypatch, caplog):
    monkeypatch.setenv("FUSEMYCELL_PROGRESS", "log")

    def failing():
        yield 1
        raise OSError("disk gone")

    with caplog.at_level(logging.INFO, logger="fusemycell.progress"):
        with pytest.raises(OSError, match="disk gone"):
            list(track(failing(), "writing"))
        for item in track(range(10), "abandoned"):
            if item == 2:
                break
    assert _summaries(caplog) == []


def test_summary_can_be_left_to_the_caller(monkeypatch, caplog):
    monkeypatch.setenv("FUSEMYCELL_PROGRESS", "log")
    with caplog.at_level(logging.INFO, logger="fusemycell.progress"):
        list(track(range(3), "epoch 2/2", summary=False))
    assert _summaries(caplog) == []


def test_unknown_mode_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("FUSEMYCELL_PROGRESS", "loud")
    with pytest.raises(ValueError, match="FUSEMYCELL_PROGRESS='loud'.*auto, bar, log, off"):
        progress_mode()


def test_push_style_progress_counts_updates_and_closes_once(monkeypatch, caplog):
    monkeypatch.setenv("FUSEMYCELL_PROGRESS", "log")
    with caplog.at_level(logging.INFO, logger="fusemycell.progress"):
        with Progress("tiles", total=7, unit="tile") as progress:
            progress.update(4)
            progress.update(3)
        progress.close()
    (summary,) = _summaries(caplog)
    assert summary and summary["count"] == "7"


def test_sliding_window_prediction_reports_its_tiles(monkeypatch, caplog):
    monkeypatch.setenv("FUSEMYCELL_PROGRESS", "log")
    volume = np.random.default_rng(0).random((12, 20, 20), dtype=np.float32)
    with caplog.at_level(logging.INFO, logger="fusemycell.progress"):
        out = predict_array(volume, lambda batch: batch, TileSettings(tile_zyx=(8, 16, 16), overlap=0.5))
    np.testing.assert_allclose(out, volume, rtol=1e-5)  # identity backend: blending is exact
    (summary,) = _summaries(caplog)
    assert summary and summary["what"] == "sliding-window prediction" and summary["unit"] == "tile"
    # 12 planes of tile 8, step 4: z starts 0, 4; 20 pixels of tile 16, step 8: y/x starts 0, 4 (flush)
    assert int(summary["count"]) == 2 * 2 * 2


def test_a_listener_follows_every_tile_of_a_prediction_in_its_thread(monkeypatch):
    monkeypatch.setenv("FUSEMYCELL_PROGRESS", "off")  # listeners hear whatever the display mode
    volume = np.random.default_rng(0).random((12, 20, 20), dtype=np.float32)
    heard = []
    with listen(heard.append):
        predict_array(volume, lambda batch: batch, TileSettings(tile_zyx=(8, 16, 16), overlap=0.5, batch_size=3))
    assert all(u.description == "sliding-window prediction" and u.unit == "tile" for u in heard)
    assert all(u.total == 8 for u in heard)
    counts = [u.count for u in heard]
    assert counts[0] == 0 and counts[-1] == 8 and counts == sorted(counts)  # the start, then each batch
    # outside the block, and in another thread, nothing is heard
    heard.clear()
    predict_array(volume, lambda batch: batch, TileSettings(tile_zyx=(8, 16, 16)))
    with listen(heard.append):
        worker = threading.Thread(
            target=predict_array, args=(volume, lambda batch: batch, TileSettings(tile_zyx=(8, 16, 16)))
        )
        worker.start()
        worker.join()
    assert heard == []


def test_a_listener_stops_the_work_between_two_batches(monkeypatch, caplog):
    monkeypatch.setenv("FUSEMYCELL_PROGRESS", "log")
    volume = np.random.default_rng(0).random((12, 20, 20), dtype=np.float32)
    batches = []

    def backend(batch):
        batches.append(len(batch))
        return batch

    def cancel_after_the_first_batch(update):
        if update.count >= 1:
            raise KeyboardInterrupt("cancelled")

    with caplog.at_level(logging.INFO, logger="fusemycell.progress"):
        with pytest.raises(KeyboardInterrupt, match="cancelled"), listen(cancel_after_the_first_batch):
            predict_array(volume, backend, TileSettings(tile_zyx=(8, 16, 16), batch_size=2))
    assert batches == [2]  # of 4 batches, the network saw one
    assert _summaries(caplog) == []  # stopped, not done
    with listen(lambda update: None):  # listeners nest and are removed when their block ends
        assert len(progress_module._listeners()) == 1
    assert progress_module._listeners() == ()


def test_off_a_terminal_a_line_comes_while_the_work_runs(monkeypatch, caplog):
    """A log silent for minutes reads as a hung program: a thread of the progress writes a line meanwhile."""
    monkeypatch.setenv("FUSEMYCELL_PROGRESS", "log")
    monkeypatch.setattr(progress_module, "LOG_INTERVAL_S", 0.01)
    seen = threading.Event()

    class Seen(logging.Handler):
        def emit(self, record):
            seen.set()

    handler = Seen()
    progress_module.logger.addHandler(handler)
    try:
        with caplog.at_level(logging.INFO, logger="fusemycell.progress"):
            running = Progress("epoch 1/7", total=128, unit="batch", summary=False)
            running.update(5)
            assert seen.wait(timeout=30)  # no speed asserted: only that a line comes before the work ends
            running.close()
    finally:
        progress_module.logger.removeHandler(handler)
    assert running._heartbeat is not None and not running._heartbeat.is_alive()  # it stops with the work
    line = caplog.records[0].getMessage()
    assert re.match(r"^epoch 1/7: 5/128 batches, \d+ s, [\d.e+]+ batch/s, ETA \d+ s$", line), line


def test_the_running_line_says_what_is_known(monkeypatch):
    monkeypatch.setenv("FUSEMYCELL_PROGRESS", "off")
    progress = Progress("epoch 2 validation")
    assert re.match(r"^epoch 2 validation: \d+ s so far$", progress.running_line())
    progress.update(3)
    assert re.match(r"^epoch 2 validation: 3 its, \d+ s, ", progress.running_line())
    assert progress._heartbeat is None  # only off a terminal, where no bar shows progress


def test_progress_dropped_unclosed_stops_its_lines(monkeypatch):
    """Work that fails midway may never close its progress: its thread must not log forever."""
    import gc

    monkeypatch.setenv("FUSEMYCELL_PROGRESS", "log")
    monkeypatch.setattr(progress_module, "LOG_INTERVAL_S", 0.01)
    abandoned = Progress("predicting", total=10, unit="tile")
    heartbeat = abandoned._heartbeat
    del abandoned
    gc.collect()
    heartbeat.join(timeout=30)
    assert not heartbeat.is_alive()
