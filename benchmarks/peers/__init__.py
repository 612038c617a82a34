"""Side-by-side benchmarks of glmm_sparse against lme4, statsmodels and plain OLS.

``make bench-peers`` runs ``harness.py``: the cases (``cases.py``) are fitted by each peer
in a fresh process (``run_one.py`` for Python, ``lme4_fit.R`` for R), the raw records go to
``results/<case>.json``, and ``report.py`` rebuilds the peers section of docs/benchmarks.md
from every record present, judging each case's target (``targets.py``).
"""
