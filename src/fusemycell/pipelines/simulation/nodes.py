"""Nodes of the simulation pipeline: thin wrappers around :mod:`fusemycell.simulation`."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from fusemycell.errors import UserError
from fusemycell.io.pairs import pair_key
from fusemycell.io.volume import Volume
from fusemycell.parameters import Validated
from fusemycell.simulation import SimulationConfig, VolumeSpec, simulate_pair

logger = logging.getLogger(__name__)


def simulate_acquisitions(
    simulation: Validated[SimulationConfig | None],
) -> dict[str, Callable[[], tuple[Volume, Volume]]]:
    """Plan one synthetic angle/fused pair per entry of ``simulation.volumes``.

    Returns callables keyed by pair (``image_3_nucleus``): the raw-pairs dataset
    calls them one at a time while saving, so only one pair is ever in memory.
    """
    if simulation is None:
        raise UserError("no simulation parameters: set simulation.volumes in conf/<env>/parameters_simulation.yml")
    config = simulation
    total = len(config.volumes)

    def simulate(spec: VolumeSpec, index: int) -> tuple[Volume, Volume]:
        started = time.perf_counter()
        pair = simulate_pair(spec, config)
        logger.info(
            "simulated %s (%d/%d): %s voxels at %s um in %.1f s",
            pair_key(spec.image_id, spec.channel),
            index + 1,
            total,
            "x".join(map(str, spec.shape_zyx)),
            "x".join(f"{s:g}" for s in spec.spacing_zyx),
            time.perf_counter() - started,
        )
        return pair

    return {
        pair_key(spec.image_id, spec.channel): (lambda spec=spec, index=index: simulate(spec, index))
        for index, spec in enumerate(config.volumes)
    }
