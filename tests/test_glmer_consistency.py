"""glmer against itself: identities that must hold whatever lme4 says (issue 3)."""

import warnings

import numpy as np
import pandas as pd
import pytest
from refdata import load_data

import glmm_sparse as gs
from glmm_sparse.agq import agq_deviance

CBPP = "cbind(incidence, size - incidence) ~ period + (1 | herd)"


@pytest.fixture(scope="module")
def cbpp():
    return load_data("cbpp")


@pytest.fixture(scope="module")
def cbpp_fit(cbpp):
    return gs.glmer(CBPP, cbpp, family="binomial")


def test_gaussian_identity_is_lmer_ml():
    sleep = load_data("sleepstudy")
    f = "Reaction ~ Days + (Days | Subject)"
    g = gs.glmer(f, sleep, family="gaussian")
    m = gs.lmer(f, sleep, reml=False)
    assert g.loglik == m.loglik
    assert np.array_equal(g.fixef.to_numpy(), m.fixef.to_numpy())


def _cbpp_objective(cbpp, nagq: int = 1):
    """The GLMM objective of the CBPP model, built as glmer builds it."""
    from glmm_sparse.families import get_family
    from glmm_sparse.formula import parse_formula
    from glmm_sparse.frame import build_frame
    from glmm_sparse.glmm import GlmmObjective
    from glmm_sparse.pirls import GlmmData
    from glmm_sparse.responses import binomial_response

    frame = build_frame(parse_formula(CBPP), CBPP, cbpp, response=binomial_response)
    return GlmmObjective(GlmmData.from_frame(frame, get_family("binomial")), nagq=nagq)


def test_one_node_agq_is_laplace(cbpp):
    m = gs.glmer(CBPP, cbpp, family="binomial", nagq=1)
    obj = _cbpp_objective(cbpp)
    laplace = obj.stage2(np.concatenate([m.theta, m.fixef.to_numpy()]))
    assert laplace == pytest.approx(m.objective, rel=1e-10)
    assert agq_deviance(obj, n_nodes=1) == pytest.approx(laplace, rel=1e-12)


def test_agq_deviance_settles_as_nodes_grow(cbpp):
    """The error against 25 nodes shrinks from 5 nodes on (with 2 or 3 nodes the rule can
    overshoot: cbpp gives 184.053, 184.071, 184.035, 183.966 for 1..4 nodes)."""
    devs = {k: gs.glmer(CBPP, cbpp, family="binomial", nagq=k).objective for k in (5, 9, 15, 25)}
    errors = [abs(devs[k] - devs[25]) for k in (5, 9, 15)]
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 1e-6


def test_proportions_with_weights_equal_cbind(cbpp, cbpp_fit):
    data = cbpp.assign(prop=cbpp["incidence"] / cbpp["size"])
    m = gs.glmer("prop ~ period + (1 | herd)", data, family="binomial", weights="size")
    assert m.loglik == pytest.approx(cbpp_fit.loglik, rel=1e-10)
    assert np.allclose(m.fixef.to_numpy(), cbpp_fit.fixef.to_numpy(), rtol=1e-7)


def test_constant_offset_shifts_the_intercept(cbpp, cbpp_fit):
    m = gs.glmer(CBPP, cbpp, family="binomial", offset=np.full(len(cbpp), 0.7))
    assert m.loglik == pytest.approx(cbpp_fit.loglik, rel=1e-9)
    shifted = cbpp_fit.fixef.to_numpy() - np.array([0.7, 0, 0, 0])
    assert np.allclose(m.fixef.to_numpy(), shifted, atol=1e-5)


def test_unit_weights_equal_no_weights(cbpp, cbpp_fit):
    m = gs.glmer(CBPP, cbpp.assign(one=1.0), family="binomial", weights="one")
    assert m.loglik == cbpp_fit.loglik


@pytest.fixture(scope="module")
def binary():
    rng = np.random.default_rng(5)
    g = rng.integers(0, 40, 600)
    x = rng.normal(size=600)
    p = 1 / (1 + np.exp(-(0.3 + 0.8 * x + rng.normal(0, 0.8, 40)[g])))
    y = (rng.random(600) < p).astype(int)
    return pd.DataFrame({"y": y, "x": x, "g": g})


def test_binary_response_as_numbers_booleans_and_factor(binary):
    base = gs.glmer("y ~ x + (1 | g)", binary, family="binomial")
    as_bool = gs.glmer("y ~ x + (1 | g)", binary.assign(y=binary["y"] == 1), family="binomial")
    as_factor = gs.glmer("y ~ x + (1 | g)", binary.assign(
        y=pd.Categorical(np.where(binary["y"] == 1, "yes", "no"), categories=["no", "yes"])),
        family="binomial")
    for other in (as_bool, as_factor):
        assert other.loglik == base.loglik


def test_agq_needs_one_scalar_term(binary):
    with pytest.raises(gs.ModelSpecError, match="nAGQ = 5 needs exactly one random-effects term"):
        gs.glmer("y ~ x + (x | g)", binary, family="binomial", nagq=5)


def test_agq_refuses_scale_families():
    rng = np.random.default_rng(1)
    data = pd.DataFrame({"y": rng.gamma(5.0, 0.2, 300), "g": rng.integers(0, 30, 300)})
    with pytest.raises(gs.ModelSpecError, match="nAGQ = 7 is available for the binomial and Poisson"):
        gs.glmer("y ~ 1 + (1 | g)", data, family="gamma", link="log", nagq=7)


@pytest.mark.parametrize("family, link", [("poisson", "logit"), ("binomial", "inverse")])
def test_impossible_family_link_pairs(binary, family, link):
    with pytest.raises(gs.ModelSpecError, match=link):
        gs.glmer("y ~ x + (1 | g)", binary, family=family, link=link)


@pytest.mark.parametrize("family, column, words", [
    ("binomial", "twos", r"twos: binomial proportions must lie in \[0, 1\]; first at row 1"),
    ("poisson", "negative", "negative: .*negative"),
    ("gamma", "zero", "zero: .*positive"),
])
def test_bad_responses_name_the_problem(binary, family, column, words):
    data = binary.assign(twos=2.0 * binary["y"], negative=binary["y"] - 1.0, zero=binary["y"] * 1.0)
    with pytest.raises(gs.DataError, match=words):
        gs.glmer(f"{column} ~ x + (1 | g)", data, family=family)


def test_nagq0_is_at_most_laplace(binary):
    """nAGQ = 0 optimizes a restricted problem: its Laplace log-likelihood is not higher."""
    m0 = gs.glmer("y ~ x + (1 | g)", binary, family="binomial", nagq=0)
    m1 = gs.glmer("y ~ x + (1 | g)", binary, family="binomial", nagq=1)
    assert m1.loglik >= m0.loglik - 1e-8
    assert m0.optimizer is m0.stage1


def test_pirls_failure_names_theta_iteration_and_cause(binary, monkeypatch):
    """A deviance that never decreases: the error says where and why."""
    import glmm_sparse.pirls as pirls_module

    real = pirls_module.penalized_working
    calls = {"n": 0}

    def rising(data, eta, u):
        calls["n"] += 1
        wk, pdev = real(data, eta, u)
        return wk, pdev + (0.0 if calls["n"] <= 2 else 1e6)

    monkeypatch.setattr(pirls_module, "penalized_working", rising)
    with pytest.raises(gs.NumericalError, match=r"PIRLS iteration \d+: the penalized deviance did "
                       r"not decrease .* step halvings \(at theta = \[") as err:
        gs.glmer("y ~ x + (1 | g)", binary, family="binomial")
    assert err.value.theta is not None


@pytest.mark.parametrize("case, base", [("cbpp_binomial_laplace", "shared"),
                                        ("poisson_nested_offset", "glmm")])
def test_newton_early_stop_costs_no_accuracy_that_matters(case, base, monkeypatch):
    """Canonical-link PIRLS skips its confirming iteration; against the strict rule the fit
    moves by less than 1e-9 in log-likelihood and 1e-5 relative in standard errors."""
    from refdata import glmer_args, load_case

    import glmm_sparse.pirls as pirls_module

    ref = load_case(case, base)
    data = load_data(ref["data"], base)
    fast = gs.glmer(ref["formula"], data, **glmer_args(ref))
    monkeypatch.setattr(pirls_module, "NEWTON_STEP_TOL", pirls_module.STEP_TOL)
    strict = gs.glmer(ref["formula"], data, **glmer_args(ref))
    assert fast.loglik == pytest.approx(strict.loglik, rel=1e-9)
    assert np.allclose(fast.fixef.to_numpy(), strict.fixef.to_numpy(), rtol=0, atol=1e-8)
    assert np.allclose(np.sqrt(np.diag(fast.vcov)), np.sqrt(np.diag(strict.vcov)), rtol=1e-5)


def test_poisson_slopes_where_a_theta_grows_from_near_zero_during_the_search():
    """The optimizer's trial points move the slope's theta from 0.011 to 0.72: the previous
    mode's u then makes eta ~ 20 and Poisson weights ~ 1e9, and the first PIRLS system is
    numerically singular. PIRLS restarts from the family's start (GlmmObjective._pirls).

    Reference: lme4 1.1-31 on the same rows (written to CSV from synthetic.simulate):
        glmer(y ~ x1 + x2 + (1 + x1 | g1), d, family = poisson)
        logLik -159085.3282354689; theta 0.7816190551 0.0940232686 0.2737269823;
        fixef 0.4557905000 0.2982770369 -0.3033619002
    Our optimum is 4.8e-7 higher in logLik; theta and beta agree to ~1e-6 (lme4's
    default PIRLS tolerance moves its optimum by about that, see reference/glmm/README).
    """
    from glmm_sparse.synthetic import Design, simulate

    data, _ = simulate(Design((500,), slope=True, family="poisson"), 100_000, seed=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = gs.glmer("y ~ x1 + x2 + (1 + x1 | g1)", data, family="poisson")
    assert fit.loglik >= -159085.3282354689 - 1e-7
    np.testing.assert_allclose(fit.theta, [0.7816190551, 0.0940232686, 0.2737269823],
                               rtol=1e-5)
    np.testing.assert_allclose(fit.fixef.to_numpy(), [0.4557905000, 0.2982770369,
                                                      -0.3033619002], atol=1e-5)


def test_a_flat_direction_still_gives_a_positive_definite_vcov():
    """A random slope on a column of zeros leaves theta's row of the deviance's Hessian at
    zero up to rounding, so whether its inversion fails depends on the rounding. Either
    way the fit returns a finite, positive definite vcov instead of raising numpy's
    LinAlgError (found by test_fuzz.py: seed 14 below is one of its cases)."""
    rng = np.random.default_rng(14)
    n = 15
    df = pd.DataFrame({"g1": rng.integers(0, 3, n), "g2": rng.integers(0, 3, n),
                       "x1": np.where(rng.random(n) < 0.5, 0.0, -0.0),
                       "x2": rng.standard_normal(n), "w": rng.uniform(0.5, 2, n)})
    df["y"] = rng.poisson(np.exp(0.2 + 0.3 * df.x2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = gs.glmer("y ~ x1 + x2 + (x1 || g2) + (x2 || g1:g2)", df, family="poisson",
                     weights="w")
    V = m.vcov.to_numpy()
    assert np.all(np.isfinite(V)) and np.all(np.linalg.eigvalsh(V) > 0)


def test_a_singular_hessian_falls_back_to_the_pirls_information(cbpp, cbpp_fit):
    """results_glmm.glmm_vcov: a Hessian with a zero row (a parameter the deviance does not
    depend on) is not inverted; the fit warns and takes vcov from R_X at the joint mode."""
    from dataclasses import replace

    from glmm_sparse.errors import ConvergenceWarning
    from glmm_sparse.results_glmm import glmm_vcov

    obj = _cbpp_objective(cbpp)
    params = np.concatenate([cbpp_fit.theta, cbpp_fit.fixef.to_numpy()])
    obj.stage2(params)
    H = np.diag(np.arange(1.0, params.shape[0] + 1.0))
    H[0, 0] = 0.0
    stage2 = replace(cbpp_fit.optimizer, hessian=H, units=np.ones_like(params))
    with pytest.warns(ConvergenceWarning, match="singular or not positive definite"):
        V = glmm_vcov(obj, stage2, 1.0)
    assert np.array_equal(V, obj.pls.vcov_unscaled())
    assert np.all(np.linalg.eigvalsh(V) > 0)


def test_warm_start_keeps_the_random_effects_of_the_previous_mode():
    """pirls.same_effects: Lambda_new u' = Lambda_old u per term (scalar and 2 x 2 T), and a
    term whose new T is singular (theta on its bound) keeps its u."""
    from glmm_sparse.pirls import same_effects

    rng = np.random.default_rng(3)
    offsets = [0, 5, 5 + 2 * 4, 5 + 2 * 4 + 3]
    u = rng.standard_normal(offsets[-1])
    T_old = [np.array([[0.7]]), np.array([[0.9, 0.0], [-0.3, 0.4]]), np.array([[0.2]])]
    T_new = [np.array([[1.1]]), np.array([[0.5, 0.0], [0.2, 0.8]]), np.array([[0.0]])]
    out = same_effects(u, T_old, T_new, offsets)
    np.testing.assert_allclose(out[:5] * 1.1, u[:5] * 0.7, rtol=1e-15)
    b_old = u[5:13].reshape(4, 2) @ T_old[1].T
    np.testing.assert_allclose(out[5:13].reshape(4, 2) @ T_new[1].T, b_old, rtol=1e-13)
    np.testing.assert_array_equal(out[13:], u[13:])


@pytest.mark.parametrize("case, base", [("cbpp_binomial_laplace", "shared"),
                                        ("poisson_nested_offset", "glmm")])
def test_warm_start_from_the_previous_random_effects_changes_no_estimate(case, base,
                                                                         monkeypatch):
    """PIRLS from the previous mode's b (GlmmObjective._warm) and from its u (lme4's warm
    start) converge to the same modes: the fits agree to PIRLS's tolerance (measured: the
    same log-likelihood, fixed effects within 5e-11, theta within 1e-11 relative)."""
    from refdata import glmer_args, load_case

    import glmm_sparse.glmm as glmm_module

    ref = load_case(case, base)
    data = load_data(ref["data"], base)
    warm = gs.glmer(ref["formula"], data, **glmer_args(ref))
    monkeypatch.setattr(glmm_module, "same_effects", lambda u, T_old, T_new, offsets: u)
    plain = gs.glmer(ref["formula"], data, **glmer_args(ref))
    assert warm.loglik == pytest.approx(plain.loglik, rel=1e-12)
    assert np.allclose(warm.fixef.to_numpy(), plain.fixef.to_numpy(), rtol=0, atol=1e-9)
    assert np.allclose(warm.theta, plain.theta, rtol=1e-9)


@pytest.mark.parametrize("nagq", [0, 1, 5])
def test_single_term_pirls_in_one_pass_over_the_levels(cbpp, nagq, monkeypatch):
    """PIRLS on a single term's objective (update_L_RZX: update_levels) gives the fit the
    separate updates give: u-only PIRLS the same factor bit for bit, the joint one
    (nAGQ = 0) R_ZX'R_ZX summed per chunk, to rounding."""
    fused = gs.glmer(CBPP, cbpp, family="binomial", nagq=nagq)
    monkeypatch.setattr("glmm_sparse.objective.LEVEL_KS", ())  # the separate updates
    separate = gs.glmer(CBPP, cbpp, family="binomial", nagq=nagq)
    # the log-determinant and R_ZX'R_ZX are summed in another order: the optimizer's path
    # moves at the 1e-11 level (measured: theta 5e-11, beta 2e-10, logLik equal)
    assert fused.loglik == pytest.approx(separate.loglik, rel=1e-12)
    np.testing.assert_allclose(fused.theta, separate.theta, rtol=0, atol=1e-9)
    np.testing.assert_allclose(fused.fixef.values, separate.fixef.values, rtol=0, atol=1e-9)
