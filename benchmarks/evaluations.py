"""Objective evaluations per fit: BOBYQA (what lmer uses) against a gradient-based optimizer.

    python benchmarks/evaluations.py            # prints a markdown table

Issue 5 asks for an analytic gradient if a derivative-free optimizer needs more than 3x the
evaluations of a gradient-based one. This measures that ratio on the benchmark structures
(the seeded designs of glmm_sparse.synthetic, and the InstEval shape): lmer's own fit
(BOBYQA, then the convergence check and Newton polish), against scipy's L-BFGS-B started
from the same theta (lmer's default start), in the same units, on the same criterion,
given the gradient. The
gradient here comes from central differences, but only L-BFGS-B's requests for
(criterion, gradient) pairs are counted: that is the count it would need with an
analytic gradient, each of which costs about one evaluation (one factorization and its
solves; the gradient's trace terms reuse the factor).
"""
from __future__ import annotations

import sys
import warnings

import numpy as np
import scipy.optimize

import glmm_sparse as gs
from glmm_sparse.crossprod import accumulate
from glmm_sparse.formula import parse_formula
from glmm_sparse.frame import build_frame
from glmm_sparse.objective import LmmObjective
from glmm_sparse.scaling import theta_units
from glmm_sparse.start import moment_theta
from glmm_sparse.synthetic import INSTEVAL_FORMULA, Design, insteval_like, simulate

CASES = {
    "scalar": (Design((1000,)), 100_000),
    "slopes": (Design((1000,), slope=True), 100_000),
    "nested": (Design((100, 10), nested=True), 100_000),
    "crossed": (Design((2000, 200)), 100_000),
    "crossed_slopes": (Design((1000, 100), slope=True), 100_000),
    "insteval": (None, 73_421),
}
FD_STEP = 1e-6


def case_data(name):
    design, rows = CASES[name]
    if design is None:
        return INSTEVAL_FORMULA, insteval_like(rows, seed=1)[0]
    return design.formula(), simulate(design, rows, seed=1)[0]


def gradient_based(formula, data) -> tuple[int, float]:
    """(criterion-and-gradient requests, minimum) of L-BFGS-B on lmer's criterion."""
    frame = build_frame(parse_formula(formula), formula, data)
    obj = LmmObjective(accumulate(frame), reml=True)
    units = theta_units(frame.terms, obj.theta_map, frame.weights)
    lower = obj.theta_map.lower / units

    def f(x):
        return obj(x * units)

    def f_and_grad(x):
        f0 = f(x)
        g = np.empty_like(x)
        for i in range(x.shape[0]):
            e = np.zeros_like(x)
            e[i] = FD_STEP
            if x[i] - FD_STEP < lower[i]:
                g[i] = (f(x + e) - f0) / FD_STEP
            else:
                g[i] = (f(x + e) - f(x - e)) / (2 * FD_STEP)
        return f0, g

    bounds = [(lo if np.isfinite(lo) else None, None) for lo in lower]
    start = moment_theta(frame.terms, frame.y)  # where lmer starts, in the same units
    x0 = obj.theta_map.start if start is None else start / units
    res = scipy.optimize.minimize(f_and_grad, x0, jac=True, method="L-BFGS-B",
                                  bounds=bounds, options={"ftol": 1e-12, "gtol": 1e-6})
    return int(res.nfev), float(res.fun)


def run(names) -> list[dict]:
    rows = []
    for name in names:
        formula, data = case_data(name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = gs.lmer(formula, data)
        n_grad, fmin = gradient_based(formula, data)
        rows.append({"case": name, "formula": formula, "bobyqa": fit.optimizer.n_evals,
                     "total": fit.optimizer.n_total_evals, "lbfgsb": n_grad,
                     "ratio": fit.optimizer.n_evals / n_grad,
                     "df": fit.objective - fmin})
    return rows


def table(rows) -> str:
    header = ("| structure | model | BOBYQA evaluations | with convergence check | L-BFGS-B "
              "(criterion + gradient) | BOBYQA / L-BFGS-B | criterion: lmer - L-BFGS-B |")
    out = [header, "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        formula = r["formula"].replace("|", "\\|")
        out.append(f"| {r['case']} | `{formula}` | {r['bobyqa']} | {r['total']} | "
                   f"{r['lbfgsb']} | {r['ratio']:.2f} | {r['df']:.2e} |")
    return "\n".join(out)


if __name__ == "__main__":
    print(table(run(sys.argv[1:] or list(CASES))))
