"""Exceptions and warnings of glmm_sparse.

Every error a user can cause derives from ``GlmmSparseError`` (a ``ValueError``), so a
pipeline can catch one class; the subclasses say which stage refused the input.
Numerical failures inside a fit are ``NumericalError``; they carry the theta at which
they happened.
"""


class GlmmSparseError(ValueError):
    """Base class of the errors raised by glmm_sparse for bad input or failed fits."""


class FormulaError(GlmmSparseError):
    """The model formula cannot be parsed or names something that does not exist."""

    def __init__(self, message, formula=None, position=None):
        self.formula = formula
        self.position = position
        if formula is not None and position is not None:
            message = f"{message}\n    {formula}\n    {' ' * position}^"
        super().__init__(message)


class DataError(GlmmSparseError):
    """The data cannot be used as given (missing columns, wrong types, bad values)."""


class ModelSpecError(GlmmSparseError):
    """The model is not identifiable or not supported for these data."""


class NumericalError(GlmmSparseError):
    """A numerical step of the fit failed (not positive definite, NaN objective)."""

    def __init__(self, message, theta=None):
        self.theta = theta
        if theta is not None:
            message = f"{message} (at theta = {list(map(float, theta))})"
        super().__init__(message)


class SpillSpaceError(DataError):
    """The spill directory of an out-of-core GLMM has no room for the encoded rows (a
    resource failure: the command line exits with 1, as for a fit out of memory)."""


class FactorMemoryError(GlmmSparseError, MemoryError):
    """The model's Cholesky factor (or the matrix to factor) would not fit the memory budget.

    Raised before the allocation, with the size and what to change. A ``GlmmSparseError``,
    so one except clause still catches every refusal (the command line exits with 2), and
    a ``MemoryError``, so code that guards against running out of memory catches it too.
    ``needed`` and ``budget`` are in bytes.
    """

    def __init__(self, message, needed=None, budget=None):
        self.needed = needed
        self.budget = budget
        super().__init__(message)


class GlmmSparseWarning(UserWarning):
    """Base class of the warnings issued by glmm_sparse."""


class SingularFitWarning(GlmmSparseWarning):
    """A variance is estimated at zero or a correlation at +-1 (boundary of the space)."""


class ConvergenceWarning(GlmmSparseWarning):
    """The optimizer stopped where the scaled gradient is not small."""


class RankDeficiencyWarning(GlmmSparseWarning):
    """Fixed-effects columns were dropped because they are linear combinations of others."""


class DroppedRowsWarning(GlmmSparseWarning):
    """Rows with missing values in used columns were dropped."""
