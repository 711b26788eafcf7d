"""The trained network as a BioImage Model Zoo package (bioimage.io model spec 0.5).

The package (a zip: ``rdf.yaml``, weights, test tensors, covers, documentation) runs in
deepImageJ/Fiji, ilastik, napari and the bioimage.io tools without this project:

- **weights**: TorchScript (traced :meth:`UNet3D.forward_padded`) and ONNX (the project's export,
  dynamic axes). The PyTorch state dict is *not* included: the spec wants an architecture source
  file that builds the network from keyword arguments alone, and ``fusemycell.models.unet`` imports
  the project's configuration classes, so that file would not run without this project;
- **preprocessing**: the challenge's normalisation, ``(x - p2) / (p99.8 - p2)`` per volume, is the
  spec's ``scale_range`` (per sample, over z, y and x);
- **postprocessing**: none. Our inference maps the prediction back to the input's grey levels
  (``p2 + y * (p99.8 - p2)`` of the *input*, rounded to uint16, stretched to ``min_output_range``);
  spec 0.5 cannot express the inverse of another tensor's ``scale_range``, so the package's output
  is the prediction on the challenge's normalised scale, which is what N_SSIM compares, and its
  documentation says so;
- **test tensors**: one validation patch (its size a multiple of the network's pooling), and the
  output our own code computes for it (the challenge normalisation of :mod:`fusemycell.normalization`,
  then the network). :func:`check_package` runs the exported weights on the test input the way the
  spec says a consumer does and refuses the package when an answer differs from ours.

Input channels computed from the single view (``in_channels`` above 1) cannot be described by the
spec; such a model is refused with a message that says so (:class:`BioimageioExportError`), as is a
description the spec rejects. Voxel sizes are written for people, to three significant digits
(a resampled grid of 0.606667 um reads 0.607): the spec limits a tensor's description to 128 characters.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fusemycell.errors import UserError
from fusemycell.io.atomic import could_not_write, writing_atomically

#: The challenge, cited by every package.
CHALLENGE_CITATION = {
    "text": "Fuse My Cells challenge: predicting multi-view fused 3D light-sheet images from a single view "
    "(France-BioImaging, ISBI 2025)",
    "url": "https://fusemycells.grand-challenge.org/",
}
#: The spec's longest description of a tensor (characters).
TENSOR_DESCRIPTION_LIMIT = 128
#: Largest difference between a package's answer and ours that still counts as the same answer
#: (float32 on the normalised scale, where 1 is the [p2, p99.8] span).
TOLERANCE = 1e-4


class BioimageioExportError(UserError):
    """The model cannot be described by a bioimage.io package; the message says what is missing."""


@dataclass(frozen=True)
class ExportFacts:
    """What the export needs from a trained model: read in one place, :func:`export_facts`."""

    network: torch.nn.Module
    in_channels: int
    size_multiple: tuple[int, int, int]
    low_percentile: float
    high_percentile: float
    spacing_zyx: tuple[float, float, float]
    patch_size_zyx: tuple[int, int, int]


def export_facts(model: Any) -> ExportFacts:
    """The one adapter between the trained model (``TrainedModel``: network and model card) and the export."""
    card = model.card
    return ExportFacts(
        network=model.network,
        in_channels=int(card.architecture.in_channels),
        size_multiple=tuple(int(m) for m in card.architecture.size_multiple),  # type: ignore[arg-type]
        low_percentile=float(card.normalization.low_percentile),
        high_percentile=float(card.normalization.high_percentile),
        spacing_zyx=tuple(float(s) for s in card.spacing_zyx),  # type: ignore[arg-type]
        patch_size_zyx=tuple(int(s) for s in card.patch_size_zyx),  # type: ignore[arg-type]
    )


class _Network(torch.nn.Module):
    """The network proper on sizes that are multiples of its pooling (what the package's axes allow)."""

    def __init__(self, network: torch.nn.Module):
        super().__init__()
        self.network = network

    def forward(self, volume: torch.Tensor) -> torch.Tensor:
        return self.network.forward_padded(volume)


def voxel_size_text(spacing_zyx: tuple[float, ...]) -> str:
    """``1 x 0.607 x 0.607``: a voxel size for people (three significant digits, no float noise)."""
    return " x ".join(f"{float(s):.3g}" for s in spacing_zyx)


def test_input_from(patch: np.ndarray, multiple: tuple[int, int, int]) -> np.ndarray:
    """A ``(1, 1, z, y, x)`` float32 test input: ``patch`` cropped (or edge-padded) to multiples of ``multiple``."""
    patch = np.asarray(patch, dtype=np.float32)
    sizes = [max(m, (n // m) * m) for n, m in zip(patch.shape, multiple)]
    padded = np.pad(patch, [(0, max(0, s - n)) for s, n in zip(sizes, patch.shape)], mode="edge")
    return np.ascontiguousarray(padded[: sizes[0], : sizes[1], : sizes[2]])[None, None]


def our_answer(facts: ExportFacts, test_input: np.ndarray) -> np.ndarray:
    """What this project computes for ``test_input``: the challenge normalisation, then the network."""
    from fusemycell.normalization import NormalizationStats, normalize

    volume = test_input[0, 0].astype(np.float64)
    low, high = np.percentile(volume, (facts.low_percentile, facts.high_percentile))
    stats = NormalizationStats(
        low=float(low), high=float(high), p_low=facts.low_percentile, p_high=facts.high_percentile
    )
    normalized = normalize(volume, stats, np.float32)
    network = facts.network.eval().cpu()
    with torch.no_grad():
        return network.forward_padded(torch.from_numpy(normalized)[None, None]).numpy()


@dataclass
class NotExported:
    """No package for this model, and why (the dataset removes a stale package and keeps the reason)."""

    reason: str


@dataclass
class StagedPackage:
    """A package's description with its files in a staging folder; the dataset zips it and removes the folder."""

    description: Any
    folder: Path

    def discard(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def build_package(model: Any, test_patch: np.ndarray, *, name: str = "fusemycell 3D U-Net") -> StagedPackage:
    """Stage a bioimage.io model package for ``model``, with ``test_patch`` (a validation patch) as test input.

    Raises
    ------
    BioimageioExportError
        When the model takes computed input channels (the spec cannot describe them), or when
        an exported weight format gives a different answer from ours on the test input.
    """
    facts = export_facts(model)
    if facts.in_channels != 1:
        raise BioimageioExportError(
            f"the model takes {facts.in_channels} input channels computed from the single view; a bioimage.io "
            "package can only describe the single view itself (one channel). Retrain with in_channels: 1 "
            "or export ONNX only"
        )
    folder = Path(tempfile.mkdtemp(prefix="fusemycell-bioimageio-"))
    try:
        test_input = test_input_from(test_patch, facts.size_multiple)
        expected = our_answer(facts, test_input)
        np.save(folder / "test_input.npy", test_input)
        np.save(folder / "test_output.npy", expected)
        _write_torchscript(facts, test_input, folder / "fusemycell_unet.torchscript.pt")
        _write_onnx(model, folder / "fusemycell_unet.onnx")
        _write_cover(test_input, expected, folder / "cover.png")
        (folder / "README.md").write_text(_documentation(facts), encoding="utf-8")
        description = _checked_description(facts, folder, name)
        check_package(folder, facts)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return StagedPackage(description=description, folder=folder)


def _write_torchscript(facts: ExportFacts, example: np.ndarray, path: Path) -> None:
    module = _Network(facts.network).eval().cpu()
    with torch.no_grad():
        traced = torch.jit.trace(module, torch.from_numpy(example), check_trace=False)
    traced.save(str(path))


def _write_onnx(model: Any, path: Path) -> None:
    from fusemycell.inference.onnx_backend import export_onnx

    export_onnx(model, path, channel_outputs=False)  # one output: the spec's, with the smallest correction


def _write_cover(test_input: np.ndarray, output: np.ndarray, path: Path) -> None:
    from matplotlib.figure import Figure

    z = test_input.shape[2] // 2
    figure = Figure(figsize=(6, 3), layout="constrained")  # 2:1, as bioimage.io covers want
    for index, (title, image) in enumerate((("single view", test_input), ("predicted fusion", output))):
        axis = figure.add_subplot(1, 2, index + 1)
        axis.imshow(image[0, 0, z], cmap="gray")
        axis.set_title(title, fontsize=10)
        axis.axis("off")
    figure.savefig(path, dpi=100)


def _documentation(facts: ExportFacts) -> str:
    mz, my, mx = facts.size_multiple
    return f"""# fusemycell 3D U-Net: single view to multi-view fusion

Predicts the **fused** multi-view image of a 3D light-sheet acquisition from a **single view**, the
task of the [Fuse My Cells challenge]({CHALLENGE_CITATION["url"]}) (France-BioImaging, ISBI 2025).

## Input
One single view, axes batch, channel (1), z, y, x; z, y and x must be multiples of {mz}, {my} and {mx}
(pad a volume to them; the network was trained on patches of {"x".join(map(str, facts.patch_size_zyx))}
voxels at a voxel size of {voxel_size_text(facts.spacing_zyx)} um, z y x). Preprocessing
(in the package): the challenge's normalisation, percentiles {facts.low_percentile:g} and
{facts.high_percentile:g} of the volume mapped to 0 and 1 (`scale_range`, per sample).

## Output
The predicted fusion **on the challenge's normalised scale** (float32; 0 and 1 are the single
view's percentiles {facts.low_percentile:g} and {facts.high_percentile:g}), which is what the challenge's
N_SSIM compares. The fusemycell pipeline additionally maps it back to grey levels,
`p{facts.low_percentile:g} + y * (p{facts.high_percentile:g} - p{facts.low_percentile:g})` of the input,
rounded to uint16: the bioimage.io spec 0.5 cannot express that inverse, so do it yourself if you
need the input's grey levels.

## Large volumes
Predict in tiles (deepImageJ and bioimageio.core tile along the parameterised axes); the fusemycell
pipeline blends overlapping tiles with a Gaussian importance map.

## Weights
TorchScript and ONNX (opset 18, dynamic axes), both from the same trained network.

## Validation
Trained and selected on the validation patches of the fusemycell pipeline (best validation N_SSIM), its
learnt correction then scaled by the guard on whole validation volumes (`card.guard` in the model file);
the held-out test volumes' N_SSIM and N_IoU against the identity and Gaussian-blur baselines are in
that run's `evaluation/by_channel.csv`. The package's test output is fusemycell's own inference on the
test input; the export refuses to write a package whose weights answer differently.
"""


def _checked_description(facts: ExportFacts, folder: Path, name: str) -> Any:
    """:func:`_describe`, with the spec's refusal turned into a :class:`BioimageioExportError` naming the fields."""
    from pydantic import ValidationError

    try:
        return _describe(facts, folder, name)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}" for error in exc.errors()[:3]
        )
        raise BioimageioExportError(
            f"the bioimage.io model spec rejects the package's description ({problems}); the package is not written"
        ) from None


def _describe(facts: ExportFacts, folder: Path, name: str) -> Any:
    from bioimageio.spec.model import v0_5 as spec

    mz, my, mx = facts.size_multiple

    def space_axes(kind: str) -> list[Any]:
        # no physical scale on the axes: consumers size an output as input size * input scale / output scale,
        # and in floating point 6 * 0.39 / 0.39 is 5.999..., one voxel short; the voxel size is in the description
        axes = []
        for axis_id, multiple in (("z", mz), ("y", my), ("x", mx)):
            if kind == "input":
                size: Any = spec.ParameterizedSize(min=multiple, step=multiple)
                axes.append(spec.SpaceInputAxis(id=spec.AxisId(axis_id), size=size))
            else:
                size = spec.SizeReference(tensor_id=spec.TensorId("single_view"), axis_id=spec.AxisId(axis_id))
                axes.append(spec.SpaceOutputAxis(id=spec.AxisId(axis_id), size=size))
        return axes

    single_view = spec.InputTensorDescr(
        id=spec.TensorId("single_view"),
        description=_input_description(facts),
        axes=[spec.BatchAxis(), spec.ChannelAxis(channel_names=[spec.Identifier("single_view")]), *space_axes("input")],
        test_tensor=spec.FileDescr(source=folder / "test_input.npy"),
        data=spec.IntervalOrRatioDataDescr(type="float32"),
        preprocessing=[
            spec.ScaleRangeDescr(
                kwargs=spec.ScaleRangeKwargs(
                    axes=[spec.AxisId("z"), spec.AxisId("y"), spec.AxisId("x")],
                    min_percentile=facts.low_percentile,
                    max_percentile=facts.high_percentile,
                    eps=1e-6,
                )
            )
        ],
    )
    fused = spec.OutputTensorDescr(
        id=spec.TensorId("fused"),
        description="the predicted multi-view fusion, on the challenge's normalised scale",
        axes=[spec.BatchAxis(), spec.ChannelAxis(channel_names=[spec.Identifier("fused")]), *space_axes("output")],
        test_tensor=spec.FileDescr(source=folder / "test_output.npy"),
        data=spec.IntervalOrRatioDataDescr(type="float32"),
    )
    return spec.ModelDescr(
        name=name,
        description="Predicts the fused multi-view 3D light-sheet image from a single view (Fuse My Cells, ISBI 2025).",
        authors=[spec.Author(name="fusemycell contributors")],
        cite=[spec.CiteEntry(text=CHALLENGE_CITATION["text"], url=CHALLENGE_CITATION["url"])],
        license=spec.LicenseId("MIT"),
        documentation=spec.FileDescr(source=folder / "README.md"),
        covers=[spec.FileDescr(source=folder / "cover.png")],
        tags=["light-sheet", "3d", "multi-view fusion", "image restoration", "fuse-my-cells", "pytorch"],
        inputs=[single_view],
        outputs=[fused],
        weights=spec.WeightsDescr(
            torchscript=spec.TorchscriptWeightsDescr(
                source=folder / "fusemycell_unet.torchscript.pt", pytorch_version=spec.Version(torch.__version__)
            ),
            onnx=spec.OnnxWeightsDescr(source=folder / "fusemycell_unet.onnx", opset_version=18, parent="torchscript"),
        ),
    )


def _input_description(facts: ExportFacts) -> str:
    """The single view's description, within the spec's limit whatever the voxel size."""
    voxel = voxel_size_text(facts.spacing_zyx)
    text = (
        "one light-sheet view, any grey levels (normalised by the preprocessing); "
        f"trained at a voxel size of {voxel} um (z y x)"
    )
    if len(text) > TENSOR_DESCRIPTION_LIMIT:
        text = f"one light-sheet view; trained at a voxel size of {voxel} um (z y x)"
    return text[:TENSOR_DESCRIPTION_LIMIT]


def check_package(folder: Path, facts: ExportFacts) -> None:
    """Run both weight formats on the test input as a consumer does (``scale_range``, then the weights)
    and refuse the package when either answer differs from ours by more than :data:`TOLERANCE`."""
    import onnxruntime

    test_input = np.load(folder / "test_input.npy")
    expected = np.load(folder / "test_output.npy")
    volume = test_input.astype(np.float64)
    low, high = np.percentile(volume, (facts.low_percentile, facts.high_percentile))
    consumer_input = ((volume - low) / (high - low + 1e-6)).astype(np.float32)  # the spec's scale_range
    scripted = torch.jit.load(str(folder / "fusemycell_unet.torchscript.pt"))
    with torch.no_grad():
        answers = {"torchscript": scripted(torch.from_numpy(consumer_input)).numpy()}
    session = onnxruntime.InferenceSession(str(folder / "fusemycell_unet.onnx"), providers=["CPUExecutionProvider"])
    answers["onnx"] = session.run(None, {session.get_inputs()[0].name: consumer_input})[0]
    for weights, answer in answers.items():
        difference = float(np.max(np.abs(answer - expected))) if answer.shape == expected.shape else float("inf")
        if not difference <= TOLERANCE:
            raise BioimageioExportError(
                f"the {weights} weights answer the test input differently from fusemycell's inference "
                f"(largest difference {difference:.3g} on the normalised scale, shape {answer.shape} vs "
                f"{expected.shape}); the package is not written"
            )


def save_package(package: StagedPackage, path: str | os.PathLike) -> Path:
    """Zip ``package`` (``rdf.yaml`` and its files) to ``path`` atomically; the staging folder is removed."""
    from bioimageio.spec import save_bioimageio_package

    path = Path(path)
    try:
        with writing_atomically(path) as temporary:
            save_bioimageio_package(package.description, output_path=temporary)
    except OSError as exc:
        raise could_not_write(path, exc) from exc
    finally:
        package.discard()
    return path
