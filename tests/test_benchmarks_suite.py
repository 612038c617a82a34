"""The asv suite (benchmarks/suites) still runs: every benchmark class draws its data and
fits, at a tiny size, and what it tracks is a finite positive number.

asv is not needed: the suite is imported by path, as a package (it uses relative
imports), and its classes are found the way asv finds them (public, not abstract, with
benchmark methods). A full run is `make bench`.
"""
import importlib.util
import inspect
import math
import sys
from pathlib import Path

import pytest

SUITE = Path(__file__).resolve().parents[1] / "benchmarks" / "suites"
TINY_ROWS = 2_000
STRUCTURES = {"Scalar", "Slopes", "Nested", "Crossed", "CrossedSlopes", "InstEval",
              "Binomial", "Poisson"}
METHODS = ("time_fit", "peakmem_setup", "peakmem_fit", "track_objective", "track_evaluations")


def _import_suite():
    name = "glmm_sparse_asv_suites"
    spec = importlib.util.spec_from_file_location(
        name, SUITE / "__init__.py", submodule_search_locations=[str(SUITE)])
    package = importlib.util.module_from_spec(spec)
    sys.modules[name] = package
    spec.loader.exec_module(package)
    return [importlib.import_module(f"{name}.{path.stem}")
            for path in sorted(SUITE.glob("[!_]*.py"))]


def _benchmark_classes():
    found = {}
    for module in _import_suite():
        for attr, obj in vars(module).items():
            if (not attr.startswith("_") and inspect.isclass(obj)
                    and not inspect.isabstract(obj) and hasattr(obj, "track_objective")):
                found[f"{module.__name__.rsplit('.', 1)[1]}.{attr}"] = obj
    return found


CLASSES = _benchmark_classes()


def test_every_structure_is_in_the_suite():
    assert {name.rsplit(".", 1)[1] for name in CLASSES} == STRUCTURES


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_params_are_rows(name):
    cls = CLASSES[name]
    assert list(cls.param_names) == ["rows"]
    assert all(isinstance(rows, int) and rows > 0 for rows in cls.params[0])
    assert all(callable(getattr(cls, method)) for method in METHODS)


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_setup_and_fit_at_a_tiny_size(name):
    bench = CLASSES[name]()
    bench.setup(TINY_ROWS)
    assert len(bench.data) == TINY_ROWS
    bench.peakmem_setup(TINY_ROWS)
    objective = bench.track_objective(TINY_ROWS)
    evaluations = bench.track_evaluations(TINY_ROWS)
    assert isinstance(objective, float) and math.isfinite(objective) and objective > 0
    assert isinstance(evaluations, int) and evaluations > 0

def test_setup_draws_the_same_rows_each_time():
    bench = CLASSES["lmm.Crossed"]()
    bench.setup(TINY_ROWS)
    first = bench.data.copy()
    bench.setup(TINY_ROWS)
    assert first.equals(bench.data)
