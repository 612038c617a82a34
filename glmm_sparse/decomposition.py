"""Between/within decomposition: ICC, design effect, R2 and shrinkage."""
from __future__ import annotations


class DecompositionMethods:
    """Methods of fitted results (mixed into LmerResult and GlmerResult)."""
