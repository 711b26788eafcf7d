"""The npe2 manifest: valid, every command importable, shipped with the package and found through its entry point."""

from importlib.metadata import entry_points
from importlib.resources import files

import npe2
import numpy as np
import pytest
from npe2.manifest.utils import import_python_name

from fusemycell.io.tiff import write_volume
from fusemycell.napari.widget import PredictWidget


@pytest.fixture
def plugins():
    """A plugin manager of its own (not napari's global one) holding the manifest shipped in the package."""
    manager = npe2.PluginManager()
    manager.register(npe2.PluginManifest.from_file(files("fusemycell.napari") / "napari.yaml"))
    return manager


def test_the_manifest_is_valid_and_every_command_imports():
    manifest = npe2.PluginManifest.from_file(files("fusemycell.napari") / "napari.yaml")
    manifest.validate_imports()  # raises naming the command whose python_name does not import
    assert manifest.name == "fusemycell"  # npe2 requires the distribution's name
    assert [w.display_name for w in manifest.contributions.widgets] == ["Predict fused view"]
    assert [s.key for s in manifest.contributions.sample_data] == ["nucleus", "membrane"]


def test_the_installed_project_declares_the_manifest():
    (entry,) = [e for e in entry_points(group="napari.manifest") if e.name == "fusemycell"] or [None]
    assert entry is not None, "the napari.manifest entry point is missing: reinstall the project (pip install -e .)"
    assert entry.value == "fusemycell.napari:napari.yaml"
    assert (files("fusemycell.napari") / "napari.yaml").is_file()


def test_napari_finds_the_reader_the_samples_and_the_widget(tmp_path, plugins):
    volume = write_volume(tmp_path / "image_0_nucleus_angle.tif", np.ones((4, 8, 8), np.uint16), (1.0, 0.5, 0.5))
    zarr = tmp_path / "image_0_nucleus_angle.ome.zarr"
    zarr.mkdir()
    for path in (volume, zarr):
        assert "fusemycell.get_reader" in [r.command for r in plugins.iter_compatible_readers(str(path))]
    samples = dict(plugins.iter_sample_data())["fusemycell"]
    assert [s.key for s in samples] == ["nucleus", "membrane"]
    (widget,) = plugins.iter_widgets()
    assert widget.display_name == "Predict fused view" and widget.plugin_name == "fusemycell"
    assert import_python_name(plugins.get_command(widget.command).python_name) is PredictWidget
