"""Figure parts: round scale-bar lengths, a bar whose length is the micrometres it says, plurals."""

import pytest
from matplotlib.figure import Figure

from fusemycell.plotting import SCALE_BAR_GID, add_scale_bar, nice_length, plural


@pytest.mark.parametrize(
    ("limit", "length"), [(0.3, 0.2), (1.0, 1.0), (4.99, 2.0), (5.0, 5.0), (12.5, 10.0), (49.0, 20.0), (100.0, 100.0)]
)
def test_a_scale_bar_is_the_largest_round_length_that_fits(limit, length):
    assert nice_length(limit) == pytest.approx(length)


def test_the_bar_is_drawn_in_image_pixels_and_labelled_in_micrometres():
    axis = Figure().subplots()
    axis.imshow([[0.0] * 128] * 64)
    bar = add_scale_bar(axis, 0.39, 128)  # 50 um wide: a quarter is 12.5, so 10 um
    assert bar in axis.artists and bar.get_gid() == SCALE_BAR_GID
    assert bar.txt_label.get_text() == "10 µm"
    assert bar.size_bar.get_children()[0].get_width() == pytest.approx(10 / 0.39)


def test_counts_are_singular_or_plural():
    assert [plural(n, "volume") for n in (0, 1, 2)] == ["0 volumes", "1 volume", "2 volumes"]
