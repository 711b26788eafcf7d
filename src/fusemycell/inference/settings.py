"""``params:inference``: how a model is applied, and the folders and files it reads and writes."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from fusemycell.inference.tiling import TileSettings


class InferenceSettings(TileSettings):
    """How a model is applied (``params:inference``); an unknown key is an error.

    The tiling fields (``tiling``, ``memory_gb``, ``tile_zyx``, ``overlap``, ``batch_size``, ``tta``) are
    :class:`~fusemycell.inference.tiling.TileSettings`'s, inherited: one definition.

    The four path fields are resolved once per run (:class:`fusemycell.parameters.RunPaths`):
    the catalog's datasets and the nodes both get the resolved value.
    """

    input_dir: str | None = None
    """Folder (or one file) of single views; null = the raw folder (``raw_dir``)."""
    output_dir: str | None = None
    """Where predictions go, under the input's names; null = ``data/07_model_output/inference``."""
    model_uri: str | None = None
    """Model file or MLflow URI (``runs:/<run id>/model/fusemycell_unet.pt``); null = ``data/06_models``'s."""
    onnx_path: str | None = None
    """ONNX export used by ``backend: onnx``; null = the model's ``.onnx`` sibling (same folder or run)."""
    output_format: Literal["tiff", "ome-zarr"] = "tiff"
    """Predictions as TIFF (the challenge's format) or OME-Zarr images with a pyramid (``NAME.ome.zarr``)."""
    overwrite: bool = False
    """Replace existing TIFFs in the output folder that fusemycell did not write (its predictions are
    always replaced). Off: such a file stops the run before any prediction, naming it."""
    backend: Literal["torch", "onnx"] = "torch"
    """PyTorch, or ONNX Runtime on the exported network."""
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    """PyTorch device."""
    amp: bool = True
    """Mixed precision where the device gains from it."""
    crop_to_specimen: bool = False
    """Predict only the specimen's bounding box; the rest of the frame gets the input's background level."""
    slab_depth: int = Field(default=16, ge=1)
    """z-planes read at a time while measuring the input's percentiles."""
    min_output_range: float = Field(default=4096.0, ge=1)
    """Grey levels spanned by [p_low, p_high] in the uint16 output (the input's own span when wider)."""
    outside_training: Literal["warn", "base", "refuse"] = "warn"
    """What happens to an input outside the model's training domain (voxel size beyond 10 % of the training
    range, shape beyond a factor 2, raw p2/p99.8 or noise beyond a factor 2; see ``docs/model-card.md``):
    ``warn`` predicts it and says which property is outside, in the log and the run's report; ``base``
    writes the residual base instead (the input's light Gaussian blur the network starts from, never
    worse than the blur baseline) and says so; ``refuse`` skips it with an error naming the file and the
    property. Models without a recorded domain are not checked."""
    background_io: bool = True
    """Read the next slab, and compute planes ahead of the writer, in background threads (same result)."""

    @property
    def tile_settings(self) -> TileSettings:
        """The tiling fields alone: the one object the predictor, validation and the guard take."""
        return TileSettings.model_validate({name: getattr(self, name) for name in TileSettings.model_fields})
