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
