"""Parts the report figures share so a biologist reads them without help: scale bars, whole-number axes.

No Kedro and no pipeline here; :mod:`fusemycell.evaluation.figures`, :mod:`fusemycell.training.figures`
and :mod:`fusemycell.preprocessing.figures` draw with them.
"""

from __future__ import annotations

import math

from matplotlib.axes import Axes
from matplotlib.ticker import MaxNLocator
from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

#: The ``gid`` of every scale bar (how a test or a script finds it among an axis' artists).
SCALE_BAR_GID = "scale bar"


def nice_length(limit: float) -> float:
    """The largest 1, 2 or 5 times a power of ten that is at most ``limit`` (``limit`` > 0)."""
    power = 10.0 ** math.floor(math.log10(limit))
    return max(step * power for step in (1, 2, 5) if step * power <= limit * (1 + 1e-9))


def add_scale_bar(
    axis: Axes, micrometres_per_column: float, columns: int, *, fraction: float = 0.25, color: str = "white"
) -> AnchoredSizeBar:
    """A horizontal bar of a round length in micrometres, about ``fraction`` of an image's width, bottom right.

    ``micrometres_per_column`` is the voxel size along the image's columns (x for an xy or xz slice,
    y for a yz slice); ``columns`` its width in voxels. The bar is drawn in data coordinates, so it
    follows the image's aspect ratio.
    """
    length_um = nice_length(fraction * columns * micrometres_per_column)
    bar = AnchoredSizeBar(
        axis.transData,
        length_um / micrometres_per_column,
        f"{length_um:g} µm",
        "lower right",
        pad=0.3,
        color=color,
        frameon=False,
        size_vertical=0,
        fontproperties={"size": 7},
    )
    bar.set_gid(SCALE_BAR_GID)
    axis.add_artist(bar)
    return bar


def integer_ticks(axis: Axes, first: int, last: int) -> None:
    """Whole-number ticks on the x axis from ``first`` to ``last`` (epochs), half a step of margin each side.

    One value alone (a run that kept its first and only epoch) still gets its one tick, not fractions.
    """
    axis.set_xlim(first - 0.5, last + 0.5)
    axis.xaxis.set_major_locator(MaxNLocator(nbins=min(10, last - first + 1), integer=True, min_n_ticks=1))


def plural(count: int, word: str) -> str:
    """``1 volume``, ``2 volumes``, ``0 volumes``."""
    return f"{count} {word}" + ("" if count == 1 else "s")
