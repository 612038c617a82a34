"""Objective evaluations per fit: BOBYQA (what lmer uses) against a gradient-based optimizer.

    python benchmarks/evaluations.py            # prints the two markdown tables
    python benchmarks/evaluations.py --fits slopes_1e6 insteval   # the second one only

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

The second table fits each case twice with lmer, ``optimizer="bobyqa"`` and
``optimizer="lbfgsb"`` (the analytic gradient, gradient.py): evaluations, optimizer and
fit times, and what one gradient costs against one criterion evaluation at the optimum
(of which the selected inverse of M). It adds slopes_1e6 (benchmarks/peers/cases.py).
One run each; the load average is printed with it.
"""
from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

import numpy as np
import scipy.optimize

import glmm_sparse as gs
from glmm_sparse.crossprod import accumulate
from glmm_sparse.formula import parse_formula
from glmm_sparse.frame import build_frame
from glmm_sparse.gradient import minv_on_pattern
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
PEER_CASES = ("slopes_1e6",)  # benchmarks/peers/cases.py, for the second table only
REPEATS = 3  # timings of one evaluation: the minimum of these


def case_data(name):
    if name in PEER_CASES:
        sys.path.insert(0, str(Path(__file__).parent))
        from peers.cases import CASES as PEERS

        return PEERS[name].formula, PEERS[name].frame()
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


def least_seconds(fun, repeats: int = REPEATS) -> float:
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fun()
        best = min(best, time.perf_counter() - t0)
    return best


def evaluation_costs(fit) -> dict:
    """Seconds of one criterion evaluation, one (criterion, gradient) and one selected
    inverse of M, at the fit's theta (the fit's own objective: the sparse route)."""
    obj = fit.model.objective
    theta = np.asarray(fit.theta)
    criterion = least_seconds(lambda: obj(theta))
    both = least_seconds(lambda: obj.value_and_gradient(theta))
    obj.update(theta)
    selinv = least_seconds(lambda: minv_on_pattern(obj))
    return {"criterion": criterion, "with_gradient": both, "selinv": selinv}


def timed_fit(formula, data, optimizer):
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = gs.lmer(formula, data, optimizer=optimizer)
    return fit, time.perf_counter() - t0


def run_fits(names) -> list[dict]:
    rows = []
    for name in names:
        formula, data = case_data(name)
        bobyqa, t_b = timed_fit(formula, data, "bobyqa")
        lbfgsb, t_l = timed_fit(formula, data, "lbfgsb")
        rows.append({"case": name, "bobyqa": bobyqa.optimizer, "lbfgsb": lbfgsb.optimizer,
                     "fit_bobyqa": t_b, "fit_lbfgsb": t_l,
                     "df": bobyqa.objective - lbfgsb.objective, **evaluation_costs(lbfgsb)})
    return rows


def fits_table(rows) -> str:
    header = ("| structure | BOBYQA evals (total) | optimizer s | fit s | L-BFGS-B requests "
              "(total) | optimizer s | fit s | one criterion ms | criterion + gradient ms "
              "(selected inverse) | criterion: BOBYQA - L-BFGS-B |")
    out = [header, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        b, g = r["bobyqa"], r["lbfgsb"]
        out.append(f"| {r['case']} | {b.n_evals} ({b.n_total_evals}) | {b.seconds:.2f} | "
                   f"{r['fit_bobyqa']:.2f} | {g.n_evals} ({g.n_total_evals}) | "
                   f"{g.seconds:.2f} | {r['fit_lbfgsb']:.2f} | {1e3 * r['criterion']:.1f} | "
                   f"{1e3 * r['with_gradient']:.1f} ({1e3 * r['selinv']:.1f}) | "
                   f"{r['df']:.2e} |")
    return "\n".join(out)


if __name__ == "__main__":
    args = sys.argv[1:]
    fits_only = "--fits" in args
    names = [a for a in args if a != "--fits"]
    print("load average:", Path("/proc/loadavg").read_text().strip())
    if not fits_only:
        print(table(run(names or list(CASES))))
        print()
    print(fits_table(run_fits(names or list(CASES) + list(PEER_CASES))))
    print("load average:", Path("/proc/loadavg").read_text().strip())
