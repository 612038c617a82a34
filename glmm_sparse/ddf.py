"""Denominator degrees of freedom (Satterthwaite, Kenward-Roger) and the t and F tests of fixed effects."""
from __future__ import annotations


class DdfMethods:
    """Methods of fitted results (mixed into LmerResult and GlmerResult)."""
