"""fusemycell.datasets.volume_sources: a missing input or a file that is not a volume is the user's to fix."""

import pytest
from kedro.io.core import DatasetError

from fusemycell.datasets.volume_sources import VolumeSourceError, list_tiffs, not_a_volume
from fusemycell.errors import UserError, find_user_error


def test_a_file_that_is_not_a_volume_is_called_what_it_is(tmp_path):
    image = tmp_path / "view.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(24))
    with pytest.raises(VolumeSourceError) as raised:
        list_tiffs(image)
    assert str(raised.value).startswith(f"{image}: a PNG image, not a TIFF stack")
    assert isinstance(raised.value, DatasetError) and isinstance(raised.value, UserError)  # Kedro's type, the user's
    assert str(not_a_volume(image)) == str(raised.value)


def test_a_missing_location_is_a_user_error_behind_kedros_wrapper(tmp_path):
    with pytest.raises(VolumeSourceError, match="no such file or folder") as raised:
        list_tiffs(tmp_path / "nowhere")
    try:
        raise DatasetError("Failed while loading data from dataset") from raised.value
    except DatasetError as wrapped:
        assert find_user_error(wrapped) is raised.value
