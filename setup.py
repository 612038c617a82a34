"""Build of the compiled core: the Extension list, SuiteSparse discovery, Cython directives.

All metadata lives in pyproject.toml.
"""
import os
import sys
from pathlib import Path

import numpy
from setuptools import Extension, setup

HERE = Path(__file__).parent.resolve()
CORE = ["_blockdiag", "_classed", "_cholmod", "_crossprod", "_glm", "_lambda", "_pattern", "_selinv",
        "_schur", "_supinv", "_tilechol"]
NEEDS_CHOLMOD = {"_cholmod"}


def _candidate_prefixes():
    for var in ("SUITESPARSE_ROOT", "CONDA_PREFIX"):
        if os.environ.get(var):
            yield Path(os.environ[var])
    yield from (Path(p) for p in ("/usr", "/usr/local", "/opt/homebrew", "/opt/local"))


def _has_cholmod_h(inc: Path) -> bool:
    return (inc / "suitesparse" / "cholmod.h").exists() or (inc / "cholmod.h").exists()


def find_suitesparse():
    """(include_dirs, library_dirs) holding cholmod.h and libcholmod, or a clear exit."""
    inc_env = os.environ.get("SUITESPARSE_INCLUDE_DIR")
    lib_env = os.environ.get("SUITESPARSE_LIBRARY_DIR")
    if inc_env:
        if _has_cholmod_h(Path(inc_env)):
            return [inc_env], [lib_env] if lib_env else []
        sys.exit(f"SUITESPARSE_INCLUDE_DIR={inc_env} holds no cholmod.h (nor "
                 "suitesparse/cholmod.h): point it at the directory that does.")
    for prefix in _candidate_prefixes():
        inc = prefix / "include"
        if _has_cholmod_h(inc):
            return [str(inc)], [str(prefix / "lib")]
    sys.exit(
        "glmm_sparse needs the CHOLMOD headers (SuiteSparse) and none were found: install "
        "them with 'sudo apt-get install libsuitesparse-dev' (Debian/Ubuntu), "
        "'brew install suite-sparse' (macOS) or 'conda install -c conda-forge suitesparse', "
        "or set SUITESPARSE_INCLUDE_DIR and SUITESPARSE_LIBRARY_DIR."
    )


DEBUG = os.environ.get("GLMM_SPARSE_DEBUG") == "1"
DIRECTIVES = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": False,
    "cdivision": True,
    "initializedcheck": DEBUG,
    "embedsignature": True,
}


def extensions():
    ss_inc, ss_lib = find_suitesparse()  # before Cython: a missing header is the first news
    from Cython.Build import cythonize

    exts = []
    for name in CORE:
        cholmod = name in NEEDS_CHOLMOD
        exts.append(
            Extension(
                f"glmm_sparse._core.{name}",
                [f"glmm_sparse/_core/{name}.pyx"],
                include_dirs=[numpy.get_include(), "src"] + (ss_inc if cholmod else []),
                library_dirs=ss_lib if cholmod else [],
                libraries=["cholmod"] if cholmod else [],
                define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
                extra_compile_args=["-O0", "-g"] if DEBUG else ["-O3"],
            )
        )
    return cythonize(exts, compiler_directives=DIRECTIVES)


setup(ext_modules=extensions())
