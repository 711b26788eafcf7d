"""The README's napari screenshot: a sample single view, its predicted fused view and the real fusion, side by side.

napari draws with OpenGL, so this needs a display; on a server, Xvfb gives one::

    xvfb-run -a python docs/scripts/napari_screenshot.py            # writes docs/images/napari_prediction.png

It opens napari as a user would: File > Open Sample > FuseMyCell, the "Predict fused view" widget
with the main job's model (``data/06_models/fusemycell_unet.pt``), Predict, then the grid view.
Without a model it first trains one with the main job's pipelines up to training and a short
budget (``--train-minutes``). ``--layers-json`` also writes what the viewer holds (the tests read it).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from importlib.resources import files
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]
DEFAULT_MODEL = "data/06_models/fusemycell_unet.pt"


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL, help="model file (relative to the project) or MLflow URI")
    parser.add_argument("--out", default="docs/images/napari_prediction.png", help="the PNG to write")
    parser.add_argument("--channel", default="nucleus", choices=("nucleus", "membrane"), help="the sample")
    parser.add_argument("--tile", default="", help="tile z, y, x (default: the model's)")
    parser.add_argument("--size", default="1500x660", help="window size, WIDTHxHEIGHT pixels")
    parser.add_argument("--train-minutes", type=float, default=3.0, help="training budget when there is no model")
    parser.add_argument("--layers-json", help="also write the viewer's layers (name, shape, scale) to this file")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the prediction")
    return parser.parse_args()


def _model(location: str, train_minutes: float) -> str:
    """The model file, trained first with the main job's pipelines when it is the default and missing."""
    if "://" in location or location.startswith(("runs:/", "models:/")) or (PROJECT / location).is_file():
        return location
    if location != DEFAULT_MODEL:
        sys.exit(f"{location}: no model file there")
    command = [
        *(sys.executable, "-m", "kedro", "run", "--pipelines", "simulation,preprocessing,patching,training"),
        *("--params", f"training.budget_minutes={train_minutes:g}"),
    ]
    print(f"no model yet: training one ({' '.join(command[2:])})", flush=True)
    subprocess.run(command, cwd=PROJECT, check=True)
    return location


def _register_plugin() -> None:
    """napari finds the plugin through the installed project; an install older than the plugin gets it here."""
    import npe2

    manager = npe2.PluginManager.instance()
    manager.discover()
    if "fusemycell" not in {manifest.name for manifest in manager.iter_manifests()}:
        manager.register(npe2.PluginManifest.from_file(files("fusemycell.napari") / "napari.yaml"))


def main() -> None:
    arguments = _arguments()
    model = _model(arguments.model, arguments.train_minutes)
    import napari
    from qtpy.QtWidgets import QApplication

    from fusemycell.napari.layers import prediction_name

    _register_plugin()
    viewer = napari.Viewer(title="fusemycell: Predict fused view", show=True)
    width, height = (int(v) for v in arguments.size.split("x"))
    viewer.window.resize(width, height)
    viewer.open_sample("fusemycell", arguments.channel)
    _, widget = viewer.window.add_plugin_dock_widget("fusemycell", "Predict fused view")
    widget.project_dir = PROJECT
    widget.model_edit.setText(model)
    widget.model_edit.setCursorPosition(0)  # the start of the path, as a user sees it
    widget.tile_edit.setText(arguments.tile)
    widget.start()
    deadline = time.monotonic() + arguments.timeout
    while widget.running and time.monotonic() < deadline:
        QApplication.processEvents()
        time.sleep(0.02)
    if widget.running or not widget.status.text().endswith(" s"):
        sys.exit(f"the prediction did not finish: {widget.status.text()}")

    stem = f"image_100_{arguments.channel}"
    order = [
        f"{stem}_angle",
        prediction_name(f"{stem}_angle"),
        f"{stem}_fused",
    ]  # the grid fills from the list's bottom
    for index, name in enumerate(order):
        viewer.layers.move(viewer.layers.index(name), index)
        viewer.layers[name].visible = True
    # napari 0.9 moved the grid and the overlays to viewer.canvas; older releases keep them on the viewer
    canvas = getattr(viewer, "canvas", None)
    grid = canvas.grid if canvas is not None else viewer.grid
    scale_bar = canvas.overlays.scale_bar if canvas is not None else viewer.scale_bar
    text = canvas.overlays.text if canvas is not None else viewer.text_overlay
    grid.enabled = True
    grid.shape = (1, len(order))
    scale_bar.visible = True  # in micrometres: the layers' units
    text.visible = True
    text.position = "top_left"
    text.text = "single view (input)  |  predicted fused view  |  fused (multi-view target)"
    text.font_size = 11
    viewer.reset_view()
    for _ in range(20):
        QApplication.processEvents()
        time.sleep(0.02)
    out = PROJECT / arguments.out if not Path(arguments.out).is_absolute() else Path(arguments.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(path=str(out), canvas_only=False, flash=False)
    if arguments.layers_json:
        layers = {
            layer.name: {"shape": list(layer.data.shape), "scale": list(layer.scale), "dtype": str(layer.data.dtype)}
            for layer in viewer.layers
        }
        Path(arguments.layers_json).write_text(json.dumps({"layers": layers, "status": widget.status.text()}))
    print(f"{out}: {widget.status.text()}")
    viewer.close()


if __name__ == "__main__":
    main()
