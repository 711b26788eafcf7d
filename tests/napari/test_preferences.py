"""napari keeps the voxel size: the plugin's first use makes its reader napari's choice for FuseMyCell names.

Every test works on a throw-away settings object saved to a file of its own (``napari_settings``,
``tests/napari/conftest.py``), never on the user's settings.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import numpy as np
import pytest
import yaml
from napari.components import ViewerModel
from napari.errors import MultipleReaderError
from napari.plugins.utils import get_preferred_reader

from fusemycell.io.tiff import write_volume
from fusemycell.napari.preferences import (
    PATTERNS,
    main,
    on_first_use,
    prefer_fusemycell_reader,
    prefer_napari_reader,
)
from fusemycell.napari.reader import get_reader
from fusemycell.napari.sample import simulated_pair

SPACING = (2.0, 0.39, 0.39)


def _tiff(path, spacing=SPACING):
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_volume(path, np.arange(4 * 8 * 8, dtype=np.uint16).reshape(4, 8, 8), spacing)


def _preferences(napari_settings) -> dict[str, str]:
    return dict(napari_settings.plugins.extension2reader)


def test_the_fusemycell_names_get_this_reader_never_all_tiffs(napari_settings):
    assert prefer_fusemycell_reader(napari_settings) == list(PATTERNS)
    assert _preferences(napari_settings) == dict.fromkeys(PATTERNS, "fusemycell")
    assert not any(pattern.startswith("*.") for pattern in _preferences(napari_settings))  # no *.tif
    saved = yaml.safe_load(napari_settings.config_path.read_text())  # napari saved it, in the test's file
    assert saved["plugins"]["extension2reader"] == dict.fromkeys(PATTERNS, "fusemycell")
    assert prefer_fusemycell_reader(napari_settings) == []  # set once


def test_a_reader_the_user_chose_for_a_pattern_is_kept(napari_settings):
    mine = {"*/image_*_*_angle.tif": "napari", "*.tif": "napari"}
    napari_settings.plugins.extension2reader = mine
    added = prefer_fusemycell_reader(napari_settings)
    assert "*/image_*_*_angle.tif" not in added and len(added) == len(PATTERNS) - 1
    assert _preferences(napari_settings)["*/image_*_*_angle.tif"] == "napari"
    assert _preferences(napari_settings)["*.tif"] == "napari"


def test_napari_prefers_it_for_fusemycell_names_only_even_over_a_tif_preference(napari_settings, tmp_path):
    napari_settings.plugins.extension2reader = {"*.tif": "napari"}  # the user's, for every TIFF
    prefer_fusemycell_reader(napari_settings)
    assert get_preferred_reader(_tiff(tmp_path / "image_3_nucleus_angle.tif")) == "fusemycell"
    assert get_preferred_reader(_tiff(tmp_path / "data" / "image_3_nucleus_fused.tif")) == "fusemycell"
    assert get_preferred_reader(_tiff(tmp_path / "image_12_membrane_angle.tiff")) == "fusemycell"
    assert get_preferred_reader(_tiff(tmp_path / "stack.tif")) == "napari"
    assert get_preferred_reader(_tiff(tmp_path / "my_image_1_a_angle.tif")) == "napari"


def test_the_first_use_sets_it_once_and_says_so(napari_settings, tmp_path, caplog):
    path = _tiff(tmp_path / "image_3_nucleus_angle.tif")
    with caplog.at_level(logging.INFO, logger="fusemycell.napari.preferences"):
        assert get_reader(str(path)) is not None
        get_reader(str(path))
        simulated_pair("nucleus", shape_zyx=(8, 16, 16))
    assert _preferences(napari_settings) == dict.fromkeys(PATTERNS, "fusemycell")
    said = [r.getMessage() for r in caplog.records if r.name == "fusemycell.napari.preferences"]
    assert len(said) == 1 and "*/image_*_*_angle.tif" in said[0] and "Preferences > Plugins" in said[0]


@pytest.mark.parametrize("first_use", ["sample", "widget"])
def test_the_sample_and_the_widget_are_first_uses_too(napari_settings, first_use, request):
    if first_use == "sample":
        simulated_pair("membrane", shape_zyx=(8, 32, 32))
    else:
        from fusemycell.napari.widget import PredictWidget

        qtbot = request.getfixturevalue("qtbot")
        qtbot.addWidget(PredictWidget(ViewerModel()))
    assert _preferences(napari_settings) == dict.fromkeys(PATTERNS, "fusemycell")


def test_undone_it_stays_undone(napari_settings, capsys):
    main([])
    assert capsys.readouterr().out.count(": fusemycell (in ") == len(PATTERNS)
    main(["--undo"])
    assert _preferences(napari_settings) == dict.fromkeys(PATTERNS, "napari")
    assert on_first_use() == [] and _preferences(napari_settings) == dict.fromkeys(PATTERNS, "napari")
    assert prefer_napari_reader(napari_settings) == []


@pytest.fixture
def napari_plugins():
    """napari's plugin manager with the installed plugins (napari's built-in reader and this one), as napari
    starts; the viewer model alone does not discover them."""
    import npe2

    manager = npe2.PluginManager.instance()
    manager.discover()
    assert {"napari", "fusemycell"} <= {m.name for m in manager.iter_manifests()}
    return manager


def test_opening_a_fusemycell_tiff_as_napari_does_gives_its_voxel_size(napari_settings, napari_plugins, tmp_path):
    """``napari file.tif``, File > Open and drag and drop call ``viewer.open(path, plugin=None)``."""
    angle = _tiff(tmp_path / "image_3_nucleus_angle.tif")
    fused = _tiff(tmp_path / "image_3_nucleus_fused.tif", (1.5, 0.5, 0.5))
    viewer = ViewerModel()
    # napari runs no plugin code before it chooses: on a fresh install it asks (the window shows a chooser)
    with pytest.raises(MultipleReaderError):
        viewer.open(angle, plugin=None)
    (layer,) = viewer.open(angle, plugin="fusemycell")  # FuseMyCell picked in the chooser: the first use
    assert tuple(layer.scale) == SPACING
    (layer,) = viewer.open(fused, plugin=None)  # from then on napari picks it by itself
    assert tuple(layer.scale) == (1.5, 0.5, 0.5) and layer.name == "image_3_nucleus_fused"


@pytest.mark.slow
def test_a_later_napari_session_opens_fusemycell_files_with_their_voxel_size(napari_settings, tmp_path):
    """A new napari process with the saved settings, the plugin not used in it yet."""
    prefer_fusemycell_reader(napari_settings)
    path = _tiff(tmp_path / "image_5_membrane_angle.tif")
    script = (
        "import json, sys, npe2; npe2.PluginManager.instance().discover()\n"
        "from napari.components import ViewerModel\n"
        "print(json.dumps([[float(s) for s in layer.scale] for layer in ViewerModel().open(sys.argv[1], plugin=None)]))"
    )
    done = subprocess.run(  # NAPARI_CONFIG (the fixture's): the test's settings file
        [sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [list(SPACING)]


def test_the_preference_names_this_plugins_reader_and_its_patterns_are_the_readers():
    from fnmatch import fnmatch
    from importlib.resources import files

    import npe2

    from fusemycell.napari.preferences import PLUGIN

    manifest = npe2.PluginManifest.from_file(files("fusemycell.napari") / "napari.yaml")
    assert manifest.name == PLUGIN
    (reader,) = manifest.contributions.readers
    for pattern in PATTERNS:  # each FuseMyCell pattern is a file the reader is offered
        assert any(fnmatch(pattern.replace("*", "x"), claimed) for claimed in reader.filename_patterns), pattern
