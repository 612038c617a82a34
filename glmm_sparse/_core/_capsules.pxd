# cython: language_level=3
"""The C functions behind SciPy's cython_blas / cython_lapack capsules, for kernels that
call BLAS and LAPACK without the GIL (so the build needs no SciPy headers)."""
from cpython.pycapsule cimport PyCapsule_GetName, PyCapsule_GetPointer


cdef inline void *capsule_pointer(module, str name) except NULL:
    """The C function ``name`` of ``module`` (scipy.linalg.cython_blas or cython_lapack)."""
    capsule = module.__pyx_capi__[name]
    return PyCapsule_GetPointer(capsule, PyCapsule_GetName(capsule))
