"""Confidence intervals: Wald, profile likelihood and parametric bootstrap."""
from __future__ import annotations


class IntervalMethods:
    """Methods of fitted results (mixed into LmerResult and GlmerResult)."""
