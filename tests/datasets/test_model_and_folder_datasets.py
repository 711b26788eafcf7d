import numpy as np
import pytest
import torch
from kedro.io.core import DatasetError

from fusemycell.datasets import OnnxModelDataset, TiffFolderDataset, TorchModelDataset
from fusemycell.io.volume import Volume
from fusemycell.models.card import card_for
from fusemycell.models.config import UNetConfig
from fusemycell.models.model_file import TrainedModel
from fusemycell.models.unet import UNet3D


def _model():
    config = UNetConfig(depth=2, base_channels=2)
    return TrainedModel(UNet3D(config), card_for(config, (4, 8, 8)))


def test_torch_model_dataset_round_trip_and_missing_file(tmp_path):
    dataset = TorchModelDataset(filepath=str(tmp_path / "m.pt"))
    with pytest.raises(DatasetError, match="run 'kedro run --pipelines training' first"):
        dataset.load()
    dataset.save(_model())
    loaded = dataset.load()
    assert loaded.card.patch_size_zyx == (4, 8, 8)
    with pytest.raises(DatasetError, match="saves a TrainedModel"):
        dataset.save({"weights": 1})


def test_a_pickled_checkpoint_is_refused_through_the_catalog(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("never",))

    torch.save({"format": "fusemycell-unet", "x": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(DatasetError, match="refused"):
        TorchModelDataset(filepath=str(tmp_path / "evil.pt")).load()


def test_mlflow_uris_are_read_only(tmp_path):
    dataset = TorchModelDataset(filepath="runs:/0123/model/fusemycell_unet.pt")
    with pytest.raises(DatasetError, match="read-only"):
        dataset.save(_model())


def test_onnx_dataset_loads_the_model_it_saved(tmp_path):
    dataset = OnnxModelDataset(filepath=str(tmp_path / "m.onnx"))
    model = _model()
    dataset.save(model)
    loaded = dataset.load()  # an ONNX Runtime session of the export, with its card: not a path
    assert str(loaded.path) == str(tmp_path / "m.onnx") and loaded.card.patch_size_zyx == (4, 8, 8)
    batch = np.random.default_rng(0).random((1, 1, 4, 8, 8), dtype=np.float32)
    with torch.no_grad():
        expected = model.network.forward_padded(torch.from_numpy(batch)).numpy()
    np.testing.assert_allclose(loaded(batch), expected, atol=1e-4)
    with pytest.raises(DatasetError, match="saves a TrainedModel"):
        dataset.save({"weights": 1})


@pytest.mark.parametrize("name", ["export.onnx", "renamed.pt"])
def test_an_onnx_file_where_the_model_file_goes_is_called_so(tmp_path, name):
    """By its suffix or, renamed, by its content: not "pickled Python objects", and the ONNX backend is named."""
    OnnxModelDataset(filepath=str(tmp_path / "m.onnx")).save(_model())
    (tmp_path / "m.onnx").rename(tmp_path / name)
    with pytest.raises(DatasetError, match="an ONNX file, not a fusemycell model file") as raised:
        TorchModelDataset(filepath=str(tmp_path / name)).load()
    assert "inference.backend: onnx" in str(raised.value) and "pickled" not in str(raised.value)


def test_folder_dataset_writes_the_good_volumes_and_names_the_bad(tmp_path):
    good = Volume(data=np.ones((2, 4, 4), np.uint16), spacing_zyx=(1, 1, 1), metadata={"channel": "nucleus"})

    def broken():
        raise OSError("input truncated")

    dataset = TiffFolderDataset(path=tmp_path / "out")
    expected = r"1 volume\(s\) could not be predicted or written \(1 written\)(.|\n)*b.tif: input truncated"
    with pytest.raises(DatasetError, match=expected):
        dataset.save({"a.tif": good, "b.tif": broken})
    loaded = dataset.load()
    assert {name: source.path for name, source in loaded.items()} == {"a.tif": str(tmp_path / "out" / "a.tif")}
    assert loaded["a.tif"]().data[:].sum() == 32  # a loader per file: the volume, read lazily
    assert good.metadata == {"channel": "nucleus"}  # the mark went on the written copy, not on the caller's volume
    assert loaded["a.tif"]().metadata["fusemycell"].startswith("prediction")
    with pytest.raises(DatasetError, match="no such file or folder"):
        TiffFolderDataset(path=tmp_path / "none").load()


def test_a_bug_while_writing_one_volume_is_not_taken_for_a_bad_file(tmp_path):
    """A ValueError raised by code (not a problem of the file) stops the save with its traceback."""

    def buggy():
        raise ValueError("a bug in the prediction")

    with pytest.raises(DatasetError) as raised:
        TiffFolderDataset(path=tmp_path / "out").save({"a.tif": buggy})
    assert isinstance(raised.value.__cause__, ValueError) and "could not be predicted" not in str(raised.value)
    assert not (tmp_path / "out").exists()  # the save's own run removed the folder it made


def test_folder_preview_is_the_max_projection_of_its_first_volume(tmp_path):
    import base64
    import io

    import numpy as np
    from kedro.io.core import DatasetError
    from PIL import Image

    from fusemycell.datasets import TiffFolderDataset
    from fusemycell.io.tiff import write_volume

    folder = TiffFolderDataset(path=tmp_path / "predictions")
    (tmp_path / "predictions").mkdir()
    with pytest.raises(DatasetError, match="no TIFF volume to preview"):
        folder.preview()
    volume = np.zeros((6, 20, 30), dtype=np.uint16)
    volume[4, 5:8, 10:20] = 4000  # a bright bar in one plane only: the projection must show it
    write_volume(tmp_path / "predictions" / "a.tif", volume, (2.0, 0.5, 0.5))
    image = np.asarray(Image.open(io.BytesIO(base64.b64decode(folder.preview()))))
    assert image.shape[:2] == (20, 30)
    assert image[6, 15] > image[15, 25]  # bar brighter than the background


def test_a_tif_path_writes_exactly_that_file(tmp_path):
    good = Volume(data=np.ones((2, 4, 4), np.uint16), spacing_zyx=(1, 1, 1))
    target = tmp_path / "new" / "stack_fused.tif"
    TiffFolderDataset(path=target).save({"stack.tif": good})
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == ["stack_fused.tif"]
    assert TiffFolderDataset(path=target).load()["stack_fused.tif"]().data[:].sum() == 32
    with pytest.raises(DatasetError, match="one output file for 2 predictions.*nothing was written"):
        TiffFolderDataset(path=tmp_path / "two" / "p.tif").save({"a.tif": good, "b.tif": good})
    assert not (tmp_path / "two").exists()


def test_a_failed_save_to_a_tif_path_leaves_no_folder_it_made(tmp_path):
    def broken():
        raise OSError("input truncated")

    with pytest.raises(DatasetError, match="stack.tif: input truncated"):
        TiffFolderDataset(path=tmp_path / "made" / "deeper" / "p.tif").save({"stack.tif": broken})
    assert not (tmp_path / "made").exists()
    (tmp_path / "mine").mkdir()  # a folder that was there stays
    with pytest.raises(DatasetError):
        TiffFolderDataset(path=tmp_path / "mine" / "p.tif").save({"stack.tif": broken})
    assert (tmp_path / "mine").is_dir() and not list((tmp_path / "mine").iterdir())
