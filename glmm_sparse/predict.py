"""Predictions for new data and simulated responses."""
from __future__ import annotations


class PredictMethods:
    """Methods of fitted results (mixed into LmerResult and GlmerResult)."""
