"""Simulated responses from a fitted model: new random effects (or the fitted ones) and new noise."""
from __future__ import annotations


class SimulateMethods:
    """Methods of fitted results (mixed into LmerResult and GlmerResult)."""
