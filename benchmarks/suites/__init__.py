"""The asv suite: model fits grouped by random-effects structure x rows.

lmm.py (lmer: scalar, slopes, nested, crossed, crossed + slopes, InstEval-shaped) and
glmm.py (glmer: binomial, Poisson), all on the shared benchmark class in _base.py.
Run with ``make bench`` (benchmarks/run_asv.py); docs/benchmarks.md, "asv suite".
"""
