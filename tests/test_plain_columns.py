"""The model-matrix fast path for plain numeric columns (design.plain_columns) gives what
formulaic gives, or steps aside."""
import numpy as np
import pandas as pd
import pytest

from glmm_sparse.design import model_matrix, plain_columns

DATA = pd.DataFrame({
    "x": [1.5, -2.0, 0.25, 3.0, 4.5, -1.0],
    "z": np.array([3, 1, 4, 1, 5, 9], dtype=np.int64),
    "u": np.array([1, 2, 3, 4, 5, 6], dtype=np.uint8),
    "n": pd.array([1, 2, 3, 4, 5, 6], dtype="Int64"),
    "f": pd.array([0.5, 1.5, 2.5, 3.5, 4.5, 5.5], dtype="Float64"),
    "b": [True, False, True, False, True, True],
    "c": pd.Categorical(list("abcabc")),
    "s": list("pqrpqr"),
})


@pytest.mark.parametrize("expr", [
    "1", "0", "x", "1 + x", "0 + x", "x + z", "z + x", "0 + x + 1", "1 + x + 0", "x + 0 + z",
    "u + n + f", "1 + f", "x + b", "c + x", "s", "x + x", "log(x + 10)", "x:z", "x - 1",
    "I(x) + z", "0 + c",
])
def test_same_matrix_and_names_as_formulaic(expr):
    fast = plain_columns(expr, DATA)
    values, names = model_matrix(expr, DATA, None, "fixed-effects term")
    import formulaic  # the reference: formulaic itself on the same frame

    mm = formulaic.model_matrix(expr, DATA, na_action="ignore")
    expected = mm.to_numpy(dtype=np.float64)
    np.testing.assert_array_equal(values, expected)
    assert len(names) == expected.shape[1]
    if fast is not None:
        intercept, cols = fast
        assert list(mm.columns) == (["Intercept"] if intercept else []) + cols


@pytest.mark.parametrize("expr", ["x + b", "c + x", "s", "x + x", "log(x + 10)", "x:z",
                                  "x - 1", "I(x) + z"])
def test_anything_but_plain_numeric_columns_goes_to_formulaic(expr):
    assert plain_columns(expr, DATA) is None


def test_extra_columns_are_left_for_the_caller():
    values, names = model_matrix("1 + x", DATA, None, "fixed", extra_columns=2)
    assert values.shape == (6, 4) and names == ["(Intercept)", "x"]
    np.testing.assert_array_equal(values[:, 1], DATA["x"])


def test_a_duplicated_column_name_is_left_to_the_usual_checks():
    data = pd.DataFrame(np.ones((4, 2)), columns=["x", "x"])
    assert plain_columns("1 + x", data) is None


def test_random_term_shares_the_fixed_columns():
    """(1 + x1 | g) of y ~ x1 + x2 holds no copy of [1, x1]: a read-only view of the
    fixed-effects buffer; a term whose columns are not side by side in X gets its own."""
    from glmm_sparse.formula import parse_formula
    from glmm_sparse.frame import build_frame

    rng = np.random.default_rng(0)
    n = 200
    data = pd.DataFrame({"x1": rng.standard_normal(n), "x2": rng.standard_normal(n),
                         "g": rng.integers(0, 10, n)})
    data["y"] = data.x1 + rng.standard_normal(n)
    for formula, shared in (("y ~ x1 + x2 + (1 + x1 | g)", True),
                            ("y ~ x1 + x2 + (1 + x2 | g)", False),
                            ("y ~ x1 + x2 + (0 + x2 | g)", True)):
        frame = build_frame(parse_formula(formula), formula, data)
        X = frame.terms[0].X
        assert np.shares_memory(X, frame.XB) == shared
        assert not shared or not X.flags.writeable
        names = frame.terms[0].cnames
        expected = np.column_stack([np.ones(n) if c == "(Intercept)" else data[c] for c in names])
        assert np.array_equal(X, expected)
