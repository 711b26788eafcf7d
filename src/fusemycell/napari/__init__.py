"""The napari plugin: open FuseMyCell volumes, simulated sample pairs, and the "Predict fused view" widget.

Declared in ``napari.yaml`` (an npe2 manifest, found through the ``napari.manifest`` entry point
of the installed project). The reader and the sample data are plain functions returning napari
layer data; only :mod:`fusemycell.napari.widget` imports Qt and napari (and
:mod:`fusemycell.napari.preferences` napari's settings, when the plugin is first used: it makes this
reader napari's choice for FuseMyCell file names). Nothing here imports Kedro.
"""
