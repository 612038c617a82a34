"""The streamed PIRLS pass (rowpass.py) against dense NumPy: working weights and response
from the families' NumPy formulas, cross-products from the explicit Z, the deviance; and
its sums independent of the thread count, close to one in-order pass for any chunking."""
import numpy as np
import pytest

import glmm_sparse.parallel as parallel
from glmm_sparse.crossprod import CrossprodPlan
from glmm_sparse.families import get_family
from glmm_sparse.pirls import GlmmData
from glmm_sparse.rowpass import SLOTS, Point, row_pass, slot_chunks, term_effects
from glmm_sparse.terms import ReTerm

TOL = 1e-12


def make_data(n=3000, family="binomial", seed=4):
    rng = np.random.default_rng(seed)
    g, h = rng.integers(0, 30, n), rng.integers(0, 7, n)
    x = rng.normal(size=n)
    X = np.column_stack([np.ones(n), x])
    terms = (ReTerm("g", ("(Intercept)", "x"), tuple(map(str, range(30))), g.astype(np.int64),
                    np.ascontiguousarray(X)),
             ReTerm("h", ("(Intercept)",), tuple(map(str, range(7))), h.astype(np.int64),
                    np.ones((n, 1))))
    fam = get_family(family)
    y = (rng.random(n) < 0.4).astype(float) if family == "binomial" else rng.poisson(2.0, n) * 1.0
    prior_w = rng.uniform(0.5, 2.0, n)
    data = GlmmData(y, X, rng.normal(0, 0.1, n), prior_w, fam, CrossprodPlan.from_terms(terms))
    return data, rng


def dense_z(data):
    """The explicit n x q model matrix of the random effects."""
    blocks = []
    for t in data.plan.terms:
        Zt = np.zeros((data.n, t.q))
        for r in range(t.k):
            Zt[np.arange(data.n), t.codes * t.k + r] = t.X[:, r]
        blocks.append(Zt)
    return np.hstack(blocks)


def point(data, rng, joint):
    beta = np.array([-0.3, 0.5])
    T = [np.array([[0.8, 0.0], [0.2, 0.4]]), np.array([[0.5]])]
    u = rng.normal(size=sum(t.q for t in data.plan.terms))
    offsets = np.array([0, 60, 67])
    return Point(beta, term_effects(data.plan.terms, T, u, offsets), joint), T, u


@pytest.mark.parametrize("family", ["binomial", "poisson"])
@pytest.mark.parametrize("joint", [True, False])
def test_row_pass_matches_dense_numpy(family, joint, monkeypatch):
    monkeypatch.setattr(parallel, "CHUNK", 701)  # 5 chunks in 2 slots
    data, rng = make_data(family=family)
    pt, T, u = point(data, rng, joint)
    Z = dense_z(data)
    lam = np.zeros((67, 67))
    lam[:60, :60] = np.kron(np.eye(30), T[0])
    lam[60:, 60:] = 0.5 * np.eye(7)
    fam = data.family
    xb = data.X @ pt.beta
    eta = data.offset + xb + Z @ (lam @ u)
    mu, me = fam.link.linkinv(eta), fam.link.mu_eta(eta)
    w = data.prior_w * me**2 / fam.variance(mu)
    z = eta - data.offset - (0.0 if joint else xb) + (data.y - mu) / me
    B = np.column_stack([data.X, z]) if joint else z[:, None]
    res = row_pass(data, pt)
    cp = res.cp
    A_ZZ = Z.T @ (w[:, None] * Z)
    assert np.allclose(cp.ZtWXy, Z.T @ (w[:, None] * B), rtol=TOL, atol=TOL * np.abs(A_ZZ).max())
    assert np.allclose(cp.XtWXy, B.T @ (w[:, None] * B), rtol=TOL, atol=0)
    for t, D in enumerate(cp.diag):
        lo = [0, 60][t]
        k = data.plan.terms[t].k
        for g in range(D.shape[0]):
            sl = slice(lo + g * k, lo + (g + 1) * k)
            assert np.allclose(D[g], A_ZZ[sl, sl], rtol=TOL, atol=1e-13)
    (pb,) = cp.pairs
    for lt, ls, blk in zip(pb.lev_t, pb.lev_s, pb.A):
        assert np.allclose(blk, A_ZZ[2 * lt:2 * lt + 2, 60 + ls:61 + ls], rtol=TOL, atol=1e-13)
    dev = fam.dev_resids(data.y, mu, data.prior_w).sum()
    assert res.dev == pytest.approx(dev, rel=TOL)
    assert res.max_abs_eta == pytest.approx(np.abs(eta).max(), rel=TOL)
    assert cp.n == np.count_nonzero(w > 0) and res.nonfinite_w == 0 and res.joint == joint


def test_deviance_only_pass_and_given_eta():
    data, rng = make_data()
    pt, _, _ = point(data, rng, True)
    full = row_pass(data, pt)
    assert row_pass(data, pt, accumulate=False).dev == full.dev
    eta = np.random.default_rng(1).normal(size=data.n)
    given = row_pass(data, Point(pt.beta, (), False, eta))
    mu = data.family.link.linkinv(eta)
    assert given.dev == pytest.approx(data.family.dev_resids(data.y, mu, data.prior_w).sum(),
                                      rel=TOL)
    assert given.cp.ZtWXy.shape == (67, 1)


def test_same_bits_for_any_thread_count(monkeypatch):
    monkeypatch.setattr(parallel, "CHUNK", 293)
    monkeypatch.setattr(parallel, "PARALLEL_MIN_ROWS", 0)
    data, rng = make_data()
    pt, _, _ = point(data, rng, True)
    runs = []
    for threads in (1, 2, 3):
        monkeypatch.setenv("GLMM_SPARSE_THREADS", str(threads))
        runs.append(row_pass(data, pt))
    for other in runs[1:]:
        assert other.dev == runs[0].dev
        assert np.array_equal(other.cp.ZtWXy, runs[0].cp.ZtWXy)
        assert np.array_equal(other.cp.XtWXy, runs[0].cp.XtWXy)
        assert np.array_equal(other.cp.pairs[0].A, runs[0].cp.pairs[0].A)


def test_one_chunk_is_the_in_order_accumulation():
    """Below one chunk of rows there is one slot: the sums of CrossprodPlan.accumulate."""
    data, rng = make_data()
    pt, _, _ = point(data, rng, True)
    res = row_pass(data, pt)
    fam, eta = data.family, np.empty(data.n)
    from glmm_sparse.rowpass import chunk_eta

    chunk_eta(data, pt, slice(0, data.n), eta, None)
    mu, me = fam.link.linkinv(eta), fam.link.mu_eta(eta)
    w = data.prior_w * me**2 / fam.variance(mu)
    B = np.column_stack([data.X, (eta - data.offset) + (data.y - mu) / me])
    ref = data.plan.accumulate(w, B)
    assert np.allclose(res.cp.ZtWXy, ref.ZtWXy, rtol=1e-13, atol=1e-13)
    assert np.allclose(res.cp.diag[0], ref.diag[0], rtol=1e-13, atol=1e-13)


def test_slots_cover_the_chunks_in_order():
    for n in (0, 1, 65536, 65537, 10**6):
        runs = slot_chunks(n)
        flat = [sl for run in runs for sl in run]
        assert flat == parallel.row_chunks(n) and len(runs) <= SLOTS
