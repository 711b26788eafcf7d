"""napari sample data: a simulated angle/fused pair, made on the fly by the project's simulator (no download).

One acquisition (a nucleus or a membrane label) on the grid of the embedded default's study "a"
(56 x 128 x 128 voxels of 1 x 0.39 x 0.39 um) with the default optics, but its own specimen (image
100: not one of the main job's volumes, so a model trained by it has not seen it); a few seconds on
a CPU. The layers are named as the challenge's files would be (``image_100_nucleus_angle``,
``image_100_nucleus_fused``) and carry the voxel size as ``scale``, like volumes opened from disk.
"""

from __future__ import annotations

from fusemycell.napari.layers import LayerData, volume_layer
from fusemycell.napari.preferences import on_first_use
from fusemycell.simulation import SimulationConfig, VolumeSpec, simulate_pair

#: The sample's grid: the embedded default's study "a" (``conf/base/parameters_simulation.yml``).
SAMPLE_SHAPE_ZYX = (56, 128, 128)
#: Not an image id of the main job (0 to 17): a specimen its model has not seen.
SAMPLE_IMAGE_ID = 100
SAMPLE_SPACING_ZYX = (1.0, 0.39, 0.39)


def simulated_pair(channel: str, shape_zyx: tuple[int, int, int] = SAMPLE_SHAPE_ZYX) -> list[LayerData]:
    """The single view (``angle``) and its fusion (``fused``) of one simulated acquisition of ``channel``."""
    on_first_use()  # the plugin's first use may be its sample: the files a user opens next keep their voxel size
    spec = VolumeSpec(
        image_id=SAMPLE_IMAGE_ID, channel=channel, study="a", shape_zyx=shape_zyx, spacing_zyx=SAMPLE_SPACING_ZYX
    )
    angle, fused = simulate_pair(spec, SimulationConfig(volumes=(spec,)))
    stem = f"image_{spec.image_id}_{channel}"
    return [volume_layer(angle, f"{stem}_angle"), volume_layer(fused, f"{stem}_fused", visible=False)]


def simulated_nucleus() -> list[LayerData]:
    """Sample data "nucleus": a simulated nucleus-labelled angle/fused pair."""
    return simulated_pair("nucleus")


def simulated_membrane() -> list[LayerData]:
    """Sample data "membrane": a simulated membrane-labelled angle/fused pair."""
    return simulated_pair("membrane")
