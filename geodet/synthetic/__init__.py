"""Deterministic sample scenes with known ground truth, written block by block so
scenes far larger than memory can be generated."""

from geodet.synthetic.common import CRS, GSD, write_truth
from geodet.synthetic.vehicles import CLASSES, vehicle_scene

__all__ = ["CLASSES", "CRS", "GSD", "vehicle_scene", "write_truth"]
