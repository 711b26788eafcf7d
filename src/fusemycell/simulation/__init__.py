"""Physically motivated synthetic light-sheet acquisitions (no Kedro)."""

from fusemycell.simulation.acquisition import simulate_pair
from fusemycell.simulation.config import SimulationConfig, VolumeSpec

__all__ = ["SimulationConfig", "VolumeSpec", "simulate_pair"]
