"""The fixed and random parts as broom-style DataFrames, JSON and HTML."""
from __future__ import annotations


class TidyMethods:
    """Methods of fitted results (mixed into LmerResult and GlmerResult)."""
