"""The fingerprint figure: maximum projections of angle and fused, each with a scale bar in micrometres."""

from fusemycell.plotting import SCALE_BAR_GID
from fusemycell.preprocessing.figures import fingerprint_figure
from fusemycell.preprocessing.fingerprint import scan_volume


def _scans(make_volume):
    """Angle and fused scans of one small pair (``make_volume``'s default shape and voxel size)."""
    return [
        scan_volume(
            str(make_volume(f"image_0_nucleus_{kind}.tif", seed=seed)),
            pair="image_0_nucleus",
            kind=kind,
            channel="nucleus",
            projection_side=16,
        )
        for seed, kind in enumerate(("angle", "fused"))
    ]


def test_every_projection_has_a_scale_bar_that_measures_micrometres(make_volume):
    scans = _scans(make_volume)
    figure = fingerprint_figure(*scans, "image_0_nucleus")
    projections = [
        axis for axis in figure.axes if axis.get_title().startswith(("angle (single view): max", "fused (target): max"))
    ]
    assert len(projections) == 6
    for axis in projections:
        (bar,) = [artist for artist in axis.artists if artist.get_gid() == SCALE_BAR_GID]
        image = axis.get_images()[0].get_array()
        view = axis.get_title().rsplit(" ", 1)[-1]  # yx, zx or zy: columns along x, x, y
        # spacing (2.0, 0.4, 0.4); 30 (x) or 32 (y) voxels block-reduced to the projection's columns
        across = 0.4 * (30 if view[1] == "x" else 32) / image.shape[1]
        length_um = float(bar.txt_label.get_text().removesuffix(" µm"))
        assert abs(bar.size_bar.get_children()[0].get_width() * across - length_um) < 1e-6


def test_profiles_are_drawn_against_micrometres_and_name_the_single_view(make_volume):
    scans = _scans(make_volume)  # 10 x 32 x 30 voxels of 2.0 x 0.4 x 0.4 um
    figure = fingerprint_figure(*scans, "image_0_nucleus")
    profiles = [axis for axis in figure.axes if axis.get_xlabel().endswith("µm")]
    assert [axis.get_xlabel() for axis in profiles] == ["z (detection axis), µm", "x (illumination axis), µm"]
    z_line, x_line = (axis.get_lines()[0] for axis in profiles)
    assert z_line.get_xdata()[-1] == 9.5 * 2.0 and len(z_line.get_xdata()) == 10  # the last plane's centre, 19 um
    assert abs(x_line.get_xdata()[-1] - 29.5 * 0.4) < 1e-9
    assert [line.get_label() for line in profiles[0].get_lines()] == ["angle (single view)", "fused (target)"]
