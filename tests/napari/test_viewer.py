"""napari itself, with its OpenGL canvas: the sample, the docked widget and the screenshot script, under Xvfb.

Qt's offscreen platform has no OpenGL, so this test starts an X server in memory (Xvfb, installed
by ``.ci/run``) and runs ``docs/scripts/napari_screenshot.py`` in it, as a user would run napari.
"""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tests.conftest import PROJECT_ROOT
from tests.napari.conftest import SPACING_ZYX

pytestmark = pytest.mark.slow  # napari in a real process under Xvfb

XVFB = shutil.which("Xvfb")


@pytest.fixture
def display():
    """A display number of a fresh Xvfb server (stopped afterwards)."""
    server = subprocess.Popen(
        [XVFB, "-displayfd", "1", "-screen", "0", "1600x1000x24", "-nolisten", "tcp"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        number = server.stdout.readline().strip()
        assert number.isdigit(), "Xvfb did not start"
        yield f":{number}"
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.skipif(XVFB is None, reason="needs Xvfb for napari's OpenGL canvas (apt-get install xvfb; .ci/run does)")
def test_napari_predicts_the_sample_in_its_window_and_the_screenshot_shows_it(tmp_path, model_file, display):
    out, layers_json = tmp_path / "napari.png", tmp_path / "layers.json"
    environment = {**os.environ, "DISPLAY": display, "QT_QPA_PLATFORM": "xcb", "FUSEMYCELL_PROGRESS": "off"}
    script = PROJECT_ROOT / "docs" / "scripts" / "napari_screenshot.py"
    arguments = ["--model", str(model_file), "--out", str(out), "--tile", "16, 64, 64"]
    done = subprocess.run(
        [sys.executable, str(script), *arguments, "--layers-json", str(layers_json)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    viewer = json.loads(layers_json.read_text())
    assert viewer["status"].startswith("image_100_nucleus_angle fused (predicted): done in")
    layers = viewer["layers"]
    predicted = "image_100_nucleus_angle fused (predicted)"
    assert set(layers) == {"image_100_nucleus_angle", "image_100_nucleus_fused", predicted}
    assert all(layer["scale"] == list(SPACING_ZYX) and layer["shape"] == [56, 128, 128] for layer in layers.values())
    assert layers[predicted]["dtype"] == "uint16"
    picture = np.asarray(Image.open(out).convert("L"), dtype=float)
    assert picture.shape[1] > 1000  # the whole window: the dock widget and the canvas
    # the canvas (right of the dock areas) shows three volumes side by side: three bright columns
    canvas = picture[picture.shape[0] // 4 : 3 * picture.shape[0] // 4]
    bright_columns = canvas.mean(axis=0) > canvas.mean() + 0.25 * canvas.std()
    assert bright_columns.sum() > 0.1 * picture.shape[1]
