"""The memory guard (glmm_sparse.memory): budget, predictions against real allocations, refusals.

Predictions are held against CHOLMOD's own accounting (cholmod_common.memory_usage, via
SymbolicFactor.cholmod_memory) and against tracemalloc for the NumPy stages: each must
be at least what is allocated and not much more.
"""
import tracemalloc

import numpy as np
import pytest
import scipy.sparse as sp
from glmm_sparse._core._cholmod import SymbolicFactor

import glmm_sparse as gs
import glmm_sparse.pattern
from glmm_sparse import memory
from glmm_sparse.blas import one_blas_thread
from glmm_sparse.condvar import condvar_blocks
from glmm_sparse.crossprod import accumulate
from glmm_sparse.errors import FactorMemoryError, GlmmSparseError
from glmm_sparse.formula import parse_formula
from glmm_sparse.frame import build_frame
from glmm_sparse.memory import (
    ENV_VAR,
    check_factor_fits,
    check_pattern_fits,
    factor_bytes,
    parse_size,
)
from glmm_sparse.objective import LmmObjective
from glmm_sparse.pattern import build_pattern, pattern_size
from glmm_sparse.synthetic import Design, simulate

DESIGN = Design((200, 50))
GIB = 1 << 30


@pytest.fixture(scope="module")
def crossed():
    return simulate(DESIGN, 5000, seed=1)[0]


@pytest.fixture(scope="module")
def crossprods(crossed):
    formula = DESIGN.formula()
    return accumulate(build_frame(parse_formula(formula), formula, crossed))


@pytest.fixture
def no_env_budget(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)


# -- the budget ------------------------------------------------------------------------------
SIZES = {
    "1024": 1024, "1K": 1024, "1k": 1024, "1KB": 1024, "1KiB": 1024, "512B": 512,
    "500M": 500 << 20, "4G": 4 * GIB, "4g": 4 * GIB, "4GB": 4 * GIB, "4 GiB": 4 * GIB,
    "1.5G": 3 * GIB // 2, " 2T ": 2 << 40, ".5M": 1 << 19,
}
BAD_SIZES = ["", "lots", "-1G", "0", "0.5", "4X", "G", "1e9", "4 G B", "4G extra", "0x10"]


@pytest.mark.parametrize("text, expected", SIZES.items())
def test_sizes_parse_in_powers_of_1024(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", BAD_SIZES)
def test_bad_sizes_name_the_variable_and_the_value(text):
    expected = rf"{ENV_VAR}='{text}' is not a memory size.*e\.g\. 4G"
    with pytest.raises(ValueError, match=expected) as err:
        parse_size(text)
    assert isinstance(err.value, GlmmSparseError)  # the command line prints it, exits with 2


def test_the_environment_variable_sets_the_budget(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "4G")
    assert memory.memory_budget() == 4 * GIB
    monkeypatch.setenv(ENV_VAR, "lots")
    with pytest.raises(ValueError, match=f"{ENV_VAR}='lots'"):
        memory.memory_budget()


@pytest.mark.parametrize("value", ["", "  "])
def test_an_empty_variable_means_the_default(monkeypatch, value):
    monkeypatch.setenv(ENV_VAR, value)
    assert memory._budget(None)[1].startswith("80% of the")


def test_default_budget_is_a_fraction_of_available_memory(no_env_budget):
    budget, available = memory.memory_budget(), memory.available_memory()
    assert budget == pytest.approx(0.8 * available, rel=0.05)  # memory moves between reads
    assert budget > 0


@pytest.mark.parametrize("budget", [0, -1, 1.5, True, "4G"])
def test_a_bad_budget_argument_is_refused(budget):
    with pytest.raises(ValueError, match="budget must be a positive number of bytes"):
        check_pattern_fits(10, 2, budget=budget)


# -- available memory, on fake /proc and /sys/fs/cgroup trees --------------------------------
def write(root, files):
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


MEMINFO = "MemTotal:  8000000 kB\nMemFree:  1000000 kB\nMemAvailable:  6000000 kB\n"


def test_meminfo_available(tmp_path):
    proc = write(tmp_path / "proc", {"meminfo": MEMINFO})
    assert memory.available_memory(proc=proc, cgroup=tmp_path / "none") == 6000000 * 1024


def test_old_kernel_meminfo_counts_free_buffers_and_cache(tmp_path):
    text = "MemTotal: 8000 kB\nMemFree: 1000 kB\nBuffers: 200 kB\nCached: 300 kB\n"
    proc = write(tmp_path / "proc", {"meminfo": text})
    assert memory.available_memory(proc=proc, cgroup=tmp_path / "none") == 1500 * 1024


def test_cgroup_v2_limit_of_a_parent_applies(tmp_path):
    proc = write(tmp_path / "proc", {"meminfo": MEMINFO, "self/cgroup": "0::/job.slice/step\n"})
    cgroup = write(tmp_path / "cg", {
        "cgroup.controllers": "cpu memory\n",
        "job.slice/memory.max": "4000000000\n",
        "job.slice/memory.current": "3000000000\n",
        "job.slice/memory.stat": "anon 2000000000\ninactive_file 1000000000\n",
        "job.slice/step/memory.max": "max\n",
        "job.slice/step/memory.current": "3000000000\n",
    })
    # 4e9 - (3e9 - 1e9 of reclaimable page cache) < 6000000 kB of MemAvailable
    assert memory.available_memory(proc=proc, cgroup=cgroup) == 2_000_000_000
    assert "job.slice/memory.max" in memory._available(proc, cgroup)[1]


def test_cgroup_v1_limit_and_unlimited(tmp_path):
    proc = write(tmp_path / "proc", {"meminfo": MEMINFO,
                                     "self/cgroup": "5:cpu:/\n4:memory:/docker/abc\n"})
    cgroup = write(tmp_path / "cg", {
        "memory/memory.limit_in_bytes": "9223372036854771712\n",
        "memory/memory.usage_in_bytes": "5000000\n",
        "memory/docker/abc/memory.limit_in_bytes": "1000000000\n",
        "memory/docker/abc/memory.usage_in_bytes": "600000000\n",
        "memory/docker/abc/memory.stat": "cache 1\ntotal_inactive_file 100000000\n",
    })
    assert memory.available_memory(proc=proc, cgroup=cgroup) == 500_000_000
    (cgroup / "memory/docker/abc/memory.limit_in_bytes").write_text("9223372036854771712\n")
    assert memory.available_memory(proc=proc, cgroup=cgroup) == 6000000 * 1024


def test_a_namespaced_cgroup_is_read_at_the_root(tmp_path):
    proc = write(tmp_path / "proc", {"meminfo": MEMINFO, "self/cgroup": "0::/hidden/path\n"})
    cgroup = write(tmp_path / "cg", {"cgroup.controllers": "memory\n",
                                     "memory.max": "3000000\n", "memory.current": "1000000\n"})
    assert memory.available_memory(proc=proc, cgroup=cgroup) == 2_000_000


@pytest.mark.parametrize("meminfo", [None, "", "garbage\n", "MemAvailable: lots kB\n"])
def test_unreadable_files_fall_back_without_crashing(tmp_path, meminfo):
    proc = tmp_path / "proc"
    files = {"self/cgroup": "not a cgroup line\n"}
    if meminfo is not None:
        files["meminfo"] = meminfo
    write(proc, files)
    cgroup = write(tmp_path / "cg", {"cgroup.controllers": "", "memory.max": "oops\n"})
    assert memory.available_memory(proc=proc, cgroup=cgroup) > 0  # os.sysconf's figure


# -- predictions against what is really allocated --------------------------------------------
def random_spd_pattern(q, density, seed):
    """Upper triangle (CSC) of a random symmetric pattern with a full diagonal."""
    A = sp.random(q, q, density=density, random_state=seed, format="csc")
    U = sp.triu(A + A.T + sp.eye(q), format="csc")
    U.sort_indices()
    return U.indptr, U.indices, q


def crossed_pattern(crossprods):
    pattern = build_pattern(crossprods)
    return pattern.indptr, pattern.indices, pattern.q


def diagonally_dominant(indptr, indices, q):
    cols = np.repeat(np.arange(q), np.diff(indptr))
    return np.where(indices == cols, float(q), 0.5)


@pytest.mark.parametrize("mode", ["simplicial", "supernodal"])
@pytest.mark.parametrize("which", ["crossed", "random"])
def test_factor_bytes_bound_cholmods_own_accounting(crossprods, which, mode):
    indptr, indices, q = (crossed_pattern(crossprods) if which == "crossed"
                          else random_spd_pattern(400, 0.01, seed=3))
    F = SymbolicFactor(indptr, indices, q, mode)
    held, analysis_peak = F.cholmod_memory()
    F.factorize(diagonally_dominant(indptr, indices, q))
    _, peak = F.cholmod_memory()
    assert peak > analysis_peak  # the factorization set the peak, so peak - held is its need
    needed = peak - held
    predicted = factor_bytes(F.factor_nnz(), q, F.is_supernodal,
                             update_entries=F.update_size(), pattern_nnz=F.nnz)
    assert needed <= predicted <= 1.25 * needed
    nnz_L = len(F.sparse_L()[1])
    assert F.factor_nnz() >= nnz_L  # supernodal: relaxed amalgamation stores zeros too
    assert predicted >= (8 if mode == "supernodal" else 12) * nnz_L


def test_an_unknown_update_size_is_bounded_by_the_factor(crossprods):
    F = SymbolicFactor(*crossed_pattern(crossprods), "supernodal")
    exact = factor_bytes(F.factor_nnz(), F.n, True, update_entries=F.update_size())
    assert factor_bytes(F.factor_nnz(), F.n, True) >= exact


def test_pattern_bytes_bound_the_pattern_and_its_analysis(crossprods):
    nnz, blocks = pattern_size(crossprods)
    q = crossprods.q
    tracemalloc.start()
    pattern = build_pattern(crossprods)
    _, built = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert (pattern.nnz, sum(p.size for p in pattern.diag_pos + pattern.pair_pos)) == (nnz, blocks)
    assert built <= memory.PATTERN_BYTES_PER_ENTRY * (nnz + blocks) <= 1.25 * built
    F = SymbolicFactor(pattern.indptr, pattern.indices, q, "supernodal")
    _, analysed = F.cholmod_memory()
    assert analysed <= memory.ANALYSIS_BYTES_PER_ENTRY * nnz + memory.ANALYSIS_BYTES_PER_COLUMN * q
    assert memory.pattern_bytes(nnz, q, block_entries=blocks) <= memory.pattern_bytes(nnz, q)


@pytest.mark.parametrize("mode", ["simplicial", "supernodal"])
def test_condvar_bytes_bound_the_conditional_variances(crossed, mode):
    formula = DESIGN.formula()
    obj = LmmObjective(accumulate(build_frame(parse_formula(formula), formula, crossed)),
                       reml=True, factor_mode=mode)
    obj.update(obj.theta)
    with one_blas_thread():  # its first use looks up the BLAS libraries: not condvar's memory
        pass
    tracemalloc.start()
    condvar_blocks(obj, 1.0)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak <= memory.condvar_bytes(obj.factor.factor_nnz(), obj.factor.n)


# -- refusals ----------------------------------------------------------------------------------
def test_check_factor_fits_refuses_one_byte_too_little(crossprods):
    F = SymbolicFactor(*crossed_pattern(crossprods), "simplicial")
    with pytest.raises(FactorMemoryError) as err:
        check_factor_fits(F, budget=1)
    need = err.value.needed
    check_factor_fits(F, budget=np.int64(need))
    with pytest.raises(FactorMemoryError):
        check_factor_fits(F, budget=need - 1)
    nnz = F.factor_nnz()
    assert need >= factor_bytes(nnz, F.n, False, pattern_nnz=F.nnz)
    assert need >= memory.condvar_bytes(nnz, F.n)


def test_check_pattern_fits_refuses_one_byte_too_little():
    need = memory.pattern_bytes(10_000, 300, block_entries=12_000)
    check_pattern_fits(10_000, 300, block_entries=12_000, budget=need)
    with pytest.raises(FactorMemoryError, match="10,000 entries in its upper triangle"):
        check_pattern_fits(10_000, 300, block_entries=12_000, budget=need - 1)


def test_the_error_is_a_memory_error_and_a_glmm_sparse_error():
    err = FactorMemoryError("too large", needed=2, budget=1)
    assert isinstance(err, MemoryError) and isinstance(err, GlmmSparseError)
    assert (err.needed, err.budget) == (2, 1)


ADVICE = ["fewer levels in the largest crossed grouping factors", "drop a crossed term",
          "random slope", "more memory", f"{ENV_VAR}"]


def test_tiny_budget_refuses_the_factor_before_factorizing(crossed, monkeypatch):
    """Needs check_factor_fits after each SymbolicFactor(...) in objective.fastest_factor."""
    monkeypatch.setattr(glmm_sparse.pattern, "check_pattern_fits", lambda *a, **k: None)
    monkeypatch.setenv(ENV_VAR, "1K")
    with pytest.raises(FactorMemoryError) as err:
        gs.lmer(DESIGN.formula(), crossed)
    message = str(err.value)
    assert "Cholesky factor L" in message and "250 random effects" in message
    assert "entries" in message and "KiB" in message
    assert f"the budget is 1.0 KiB (set by {ENV_VAR}=1K)" in message
    assert all(advice in message for advice in ADVICE)
    assert err.value.budget == 1024 < err.value.needed


def test_tiny_budget_refuses_the_pattern_before_building_it(crossed, monkeypatch):
    monkeypatch.setenv(ENV_VAR, "1K")
    with pytest.raises(MemoryError) as err:
        gs.lmer(DESIGN.formula(), crossed)
    message = str(err.value)
    assert isinstance(err.value, FactorMemoryError)
    assert "entries in its upper triangle for 250 random effects" in message
    assert "levels per term: 200, 50" in message
    assert all(advice in message for advice in ADVICE)


def test_default_budget_lets_an_ordinary_fit_through(crossed, no_env_budget):
    m = gs.lmer(DESIGN.formula(), crossed)
    assert np.isfinite(m.loglik)


def test_measure_mode_falls_back_to_the_mode_that_fits(monkeypatch):
    """The supernodal factor of the InstEval shape stores twice the simplicial one's entries:
    with a budget between the two, the default mode fits with the simplicial factor."""
    from glmm_sparse.crossprod import accumulate
    from glmm_sparse.formula import parse_formula
    from glmm_sparse.frame import build_frame
    from glmm_sparse.memory import check_factor_fits
    from glmm_sparse.objective import LmmObjective
    from glmm_sparse.synthetic import INSTEVAL_FORMULA, insteval_like

    data, _ = insteval_like(20_000, seed=3)
    frame = build_frame(parse_formula(INSTEVAL_FORMULA), INSTEVAL_FORMULA, data)
    cp = accumulate(frame)
    simplicial = LmmObjective(cp, reml=True, factor_mode="simplicial").factor
    supernodal = LmmObjective(cp, reml=True, factor_mode="supernodal").factor
    budget = None
    for candidate in range(10_000_000, 2_000_000_000, 1_000_000):
        try:
            check_factor_fits(simplicial, budget=candidate)
        except gs.FactorMemoryError:
            continue
        budget = candidate
        break
    with pytest.raises(gs.FactorMemoryError):
        check_factor_fits(supernodal, budget=budget)
    monkeypatch.setattr("glmm_sparse.objective.MEASURE_ABOVE_NNZ", 0)
    monkeypatch.setenv("GLMM_SPARSE_MEMORY_BUDGET", str(budget))
    obj = LmmObjective(cp, reml=True)
    assert not obj.factor.is_supernodal


def schur_pattern():
    from glmm_sparse.synthetic import INSTEVAL_FORMULA, insteval_like

    data, _ = insteval_like(20_000, seed=3)
    frame = build_frame(parse_formula(INSTEVAL_FORMULA), INSTEVAL_FORMULA, data)
    return LmmObjective(accumulate(frame), reml=True, factor_mode="simplicial")


def test_schur_bytes_bound_the_schur_factor_and_its_inverse():
    from glmm_sparse.schur import SchurFactor, schur_bytes

    obj = schur_pattern()
    with one_blas_thread():  # as above: the libraries' lookup is not the factor's
        pass
    tracemalloc.start()
    F = SchurFactor(obj.pattern)
    F.factorize(obj.Mx, 1.0)
    F.selected_inverse()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    need = schur_bytes(obj.pattern)
    assert peak <= need <= 3 * peak


def test_tiny_budget_refuses_the_schur_factor_and_measure_goes_sparse(monkeypatch):
    from glmm_sparse.schur import SchurFactor, schur_bytes

    obj = schur_pattern()
    need = schur_bytes(obj.pattern)
    q1 = obj.pattern.diag_pos[0].shape[0]
    with pytest.raises(FactorMemoryError, match="Schur-complement factor"):
        memory.check_schur_fits(need, q1, obj.pattern.q - q1, 10, budget=need - 1)
    memory.check_schur_fits(need, q1, obj.pattern.q - q1, 10, budget=need)
    # a Schur factor larger than any budget: refused by name, passed over by "measure"
    monkeypatch.setattr("glmm_sparse.schur.schur_bytes", lambda pattern: 1 << 62)
    with pytest.raises(FactorMemoryError, match="factor_mode='schur'"):
        LmmObjective(obj.cp, reml=True, factor_mode="schur")
    monkeypatch.setattr("glmm_sparse.objective.MEASURE_ABOVE_NNZ", 0)
    monkeypatch.setattr("glmm_sparse.objective._time_factorization",
                        lambda f, Mx: 0.0 if isinstance(f, SchurFactor) else 1.0)
    assert not isinstance(LmmObjective(obj.cp, reml=True).factor, SchurFactor)


def test_the_schur_refusal_counts_the_first_terms_columns_and_bs_pairs(monkeypatch):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent / "core"))
    from test_schur import spd_problem

    from glmm_sparse.objective import _check_schur_fits

    pattern, _, M = spd_problem(100, 20, 3, seed=1, k=3)
    pairs = int(np.count_nonzero(M[:300, 300:]))
    monkeypatch.setenv("GLMM_SPARSE_MEMORY_BUDGET", "1000")
    with pytest.raises(FactorMemoryError) as err:
        _check_schur_fits(pattern)
    assert (f"the later terms' 20 random effects and the {pairs:,} entries of M that join "
            "them to the first term's 300;") in str(err.value)
