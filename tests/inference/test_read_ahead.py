import threading
import time

import numpy as np
import pytest

from fusemycell.inference.apply import InferenceSettings, predict_file
from fusemycell.inference.backends import TorchBackend
from fusemycell.inference.read_ahead import BackgroundIterator, BackgroundPlanes
from fusemycell.inference.streams import StreamingPrediction, StreamOptions
from fusemycell.inference.tiling import TileSettings
from fusemycell.io.formats import read_volume
from fusemycell.io.tiff import save_volume, write_volume
from fusemycell.models.card import card_for
from fusemycell.models.config import UNetConfig
from tests.inference.conftest import random_network

CARD = card_for(UNetConfig(depth=2, base_channels=4, residual=False), (8, 16, 16))


def test_items_come_in_order_and_all_of_them():
    assert list(BackgroundIterator(range(50), depth=3)) == list(range(50))
    assert list(BackgroundIterator([], depth=1)) == []


def test_the_queue_is_bounded():
    """Alive at once: the item the caller works on and at most ``depth`` more (the one being made included)."""
    made, taken, ahead = [0], [0], []

    def source():
        for i in range(30):
            made[0] += 1
            ahead.append(made[0] - taken[0])
            yield i

    for depth in (1, 2, 4):
        made[0], taken[0], ahead[:] = 0, 0, []
        for _ in BackgroundIterator(source(), depth=depth):
            # a slow consumer: wait until the thread has run ahead as far as it may (or made everything)
            deadline = time.monotonic() + 10
            while made[0] - taken[0] < depth + 1 and made[0] < 30 and time.monotonic() < deadline:
                time.sleep(0.001)
            taken[0] += 1  # the caller is done with it
        assert made[0] == 30 and max(ahead) <= depth + 1
        assert max(ahead) == depth + 1  # and it does run ahead


def test_a_failure_in_the_thread_is_raised_in_the_caller_naming_the_file():
    def source():
        yield 1
        raise ValueError("bad voxels")

    items = BackgroundIterator(source(), description="reading /data/x_angle.tif", path="/data/x_angle.tif")
    assert next(items) == 1
    with pytest.raises(ValueError, match="bad voxels") as raised:
        next(items)
    assert "/data/x_angle.tif" in str(raised.value)
    assert any("/data/x_angle.tif" in note for note in raised.value.__notes__)
    with pytest.raises(StopIteration):
        next(items)


def test_a_message_that_names_the_file_is_kept():
    def source():
        raise OSError("/data/x_angle.tif: file truncated?")
        yield

    with pytest.raises(OSError) as raised:
        next(BackgroundIterator(source(), description="reading /data/x_angle.tif", path="/data/x_angle.tif"))
    assert str(raised.value) == "/data/x_angle.tif: file truncated?"


def test_closing_stops_the_thread():
    started = threading.Event()

    def endless():
        i = 0
        while True:
            started.set()
            yield i
            i += 1

    items = BackgroundIterator(endless(), depth=2)
    assert next(items) == 0
    assert started.wait(10)
    items.close()
    items._thread.join(timeout=10)  # the thread notices within a poll; a thread that never stops stays alive
    assert not items._thread.is_alive()


def test_background_planes_equal_the_planes():
    volume = np.random.default_rng(0).random((12, 5, 7)).astype(np.float32)
    planes = BackgroundPlanes(volume, depth=3)
    assert planes.shape == volume.shape and planes.dtype == volume.dtype
    np.testing.assert_array_equal(np.stack([planes[z] for z in range(12)]), volume)
    with pytest.raises(IndexError, match="in order"):
        BackgroundPlanes(volume)[3]


def test_read_ahead_gives_the_same_prediction(tmp_path):
    volume = np.random.default_rng(1).random((27, 40, 36)).astype(np.float32)
    source = read_volume(write_volume(tmp_path / "v.tif", volume, (1, 1, 1)), lazy=True).data
    backend = TorchBackend(random_network(), device="cpu")
    outputs = []
    for read_ahead in (False, True):
        stream = StreamingPrediction(
            source,
            backend,
            TileSettings(tile_zyx=(8, 16, 16), overlap=0.5),
            options=StreamOptions(read_ahead=read_ahead),
        )
        outputs.append(np.stack([stream[z] for z in range(27)]))
    np.testing.assert_array_equal(outputs[0], outputs[1])


def test_predict_file_writes_the_same_file_with_and_without_background_io(tmp_path):
    rng = np.random.default_rng(2)
    source = write_volume(tmp_path / "x_angle.tif", rng.integers(100, 3000, (21, 40, 36)).astype(np.uint16), (2, 1, 1))
    backend = TorchBackend(random_network(), device="cpu")
    written = []
    for background in (False, True):
        settings = InferenceSettings(device="cpu", tile_zyx=(8, 16, 16), background_io=background)
        volume = predict_file(str(source), backend, settings, CARD)
        assert isinstance(volume.data, BackgroundPlanes) == background
        out = save_volume(tmp_path / f"out_{background}" / "x_angle.tif", volume)
        written.append(read_volume(out).data)
    np.testing.assert_array_equal(written[0], written[1])


def test_a_read_failure_in_the_background_names_the_file(tmp_path, monkeypatch):
    voxels = np.arange(21 * 40 * 36, dtype=np.uint16).reshape(21, 40, 36)
    source = write_volume(tmp_path / "x_angle.tif", voxels, (1, 1, 1))
    settings = InferenceSettings(device="cpu", tile_zyx=(8, 16, 16), background_io=True, tiling="blend")
    volume = predict_file(str(source), TorchBackend(random_network(), device="cpu"), settings, CARD)
    stream = volume.data.inner.inner
    calls = [0]
    original = type(stream.source).__getitem__

    def failing(self, key):
        calls[0] += 1
        if calls[0] > 1:
            raise RuntimeError("disk went away")
        return original(self, key)

    monkeypatch.setattr(type(stream.source), "__getitem__", failing)
    with pytest.raises(RuntimeError, match="disk went away") as raised:
        save_volume(tmp_path / "out" / "x_angle.tif", volume)
    assert "x_angle.tif" in str(raised.value)
    assert not list((tmp_path / "out").glob("*.tif"))
