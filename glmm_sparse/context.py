"""What a fitted model keeps after the fit: the frame, the parsed formula, the objective
and the options, so that tests, intervals, predictions and refits reuse the analysis and
the cross-products instead of starting again from the data.

After the results stage (... -> optimize -> results -> inference). A result's ``model``
is a ``FitContext``. Its objective is left at the optimum: code that evaluates it
elsewhere (profiles, derivatives) calls ``at_optimum()`` before reading the fit from it,
or works on its own copy (``new_objective``). Pickling drops the objective (a CHOLMOD
factor); it is rebuilt from the frame on first use.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np

from .crossprod import CrossProducts, CrossprodPlan, accumulate
from .errors import ModelSpecError
from .formula import ParsedFormula
from .frame import ModelFrame


def require_model(result, what: str = "this method") -> FitContext:
    """The result's FitContext, or a ModelSpecError saying ``what`` needs one (results made
    by lmer/glmer always have one; a result built by hand may not)."""
    model = getattr(result, "model", None)
    if model is None:
        raise ModelSpecError(f"{what} needs the model behind the result, and this result has "
                             "none (it was not made by lmer/glmer): fit it with "
                             "glmm_sparse.lmer or glmer")
    return model


@dataclass(eq=False)
class FitContext:
    """The model behind a result: its rows, structure, options and objective at the optimum.

    ``params`` is the optimum the objective is kept at: theta for an LMM and for a GLMM
    fitted with nagq = 0, (theta, beta) for the second stage of a GLMM. ``options`` holds
    the fit's keyword arguments that shape the criterion: ``reml`` (LMM), ``family`` and
    ``link`` (names, GLMM: see ``family_object``), ``nagq`` (GLMM), ``factor_mode``, ``check_convergence``, ``optimizer_options``
    and ``sigma`` (a fixed residual SD, or None).
    """

    formula: str
    parsed: ParsedFormula
    frame: ModelFrame
    options: dict
    params: np.ndarray
    objective: object = field(default=None, repr=False)
    # the LMM's cross-products once computed without an objective (n-free; not pickled),
    # and a lock so that threads asking for the objective build and update it once
    _cp: object = field(default=None, repr=False, compare=False)
    _sparse: object = field(default=None, repr=False, compare=False)
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)

    @property
    def is_glmm(self) -> bool:
        return "family" in self.options

    @property
    def family_object(self):
        """The GLMM's Family (options keep its names: a Family does not pickle)."""
        from .families import get_family

        return get_family(self.options["family"], self.options["link"])

    @property
    def n_theta(self) -> int:
        return int(sum(t.k * (t.k + 1) // 2 for t in self.frame.terms))

    @property
    def theta(self) -> np.ndarray:
        return self.params[:self.n_theta]

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["objective"] = None  # a CHOLMOD factor; rebuilt on first use
        state["_cp"] = None
        state["_sparse"] = None
        del state["_lock"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.RLock()

    def new_objective(self, **changes):
        """A new objective on the same rows (a separate factor, free to move), not updated.

        LMM: ``reml`` may be changed; a fixed ``sigma`` (options) is kept. GLMM: ``nagq`` may be changed. Its cross-products
        are the fit's (LMM) or the family's start (GLMM), as in the fit itself.
        """
        from .glmm import GlmmObjective
        from .objective import LmmObjective

        opts = dict(self.options, **changes)
        mode = opts.get("factor_mode", "measure")
        if not self.is_glmm:
            return LmmObjective(self.crossproducts(), reml=bool(opts["reml"]), factor_mode=mode,
                                sigma=opts.get("sigma"))
        return GlmmObjective(self.glmm_data(), nagq=int(opts["nagq"]), factor_mode=mode)

    def crossproducts(self):
        """The LMM's cross-products: the objective's when there is one, else one pass over
        the rows, kept for the next call (refits and bootstraps ask again and again)."""
        if self.objective is not None and not self.is_glmm:
            cp = self.objective.cp
            if isinstance(cp, CrossProducts):
                return cp
            from .classed import with_first_pairs

            source = getattr(self.objective, "source_cp", None)  # a classed objective's
            if source is not None:  # sums are not CrossProducts: they are made from these
                with self._lock:
                    if self._cp is None:
                        self._cp = with_first_pairs(source, self.objective.B)
                    return self._cp
        with self._lock:
            if self._cp is None:
                self._cp = accumulate(self.frame)
            return self._cp

    def glmm_data(self, y: np.ndarray | None = None):
        """The GLMM's fixed inputs (a new response y, if given), sharing the plan of Z."""
        from .pirls import GlmmData

        frame = self.frame
        plan = (self.objective.data.plan if self.objective is not None
                else CrossprodPlan.from_terms(frame.terms))
        family = (self.family_object if self.objective is None
                  else self.objective.data.family)
        return GlmmData.from_frame(frame, family, y=y, plan=plan)

    def at_optimum(self):
        """The fit's objective, updated at the optimum (again, if anything moved it).

        Threads may ask at once: the objective is built and updated under the lock, and
        published only when it is at the optimum.
        """
        with self._lock:
            if self.objective is None:
                obj = self.new_objective()
                self._update(obj)
                self.objective = obj
            elif not self._is_at_optimum(self.objective):
                self._update(self.objective)
            return self.objective

    def sparse_at_optimum(self):
        """An LMM's objective with the sparse factor of M (objective.LmmObjective) at the
        optimum: the fit's own, or, for a fit through the count classes (classed.py, which
        has no factor of M), one built once from the cross-products and kept."""
        from .objective import LmmObjective

        obj = self.at_optimum()
        if self.is_glmm or isinstance(obj, LmmObjective):
            return obj
        with self._lock:
            if self._sparse is None:
                sparse = self.new_objective()
                sparse.update(self.params)
                self._sparse = sparse
            return self._sparse

    def _is_at_optimum(self, obj) -> bool:
        if not self.is_glmm:
            return np.array_equal(obj.theta, self.params)
        pls_theta = obj.pls.theta
        if self.options["nagq"] == 0:
            return obj.joint and np.array_equal(pls_theta, self.params)
        return (not obj.joint and np.array_equal(pls_theta, self.theta)
                and np.array_equal(obj.state.beta, self.params[self.n_theta:]))

    def _update(self, obj) -> None:
        if not self.is_glmm:
            obj.update(self.params)
        elif self.options["nagq"] == 0:
            obj.update_stage1(self.params)
        else:
            obj.update_stage2(self.params)
