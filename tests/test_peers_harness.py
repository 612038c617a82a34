"""benchmarks/peers: targets, agreement and the doc section built from fake records (no R,
no real fits; the only processes started are two one-line Pythons)."""
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from peers import harness, report, targets
from peers.cases import CASES
from peers.targets import MET, NONE, NOT_MET, UNKNOWN, agreement

MiB = 2**20
RUN = "2025-01-02T03:04:05+00:00"


def fit(seconds, *, loglik=-1000.0, beta=(1.0, 0.5), sds=(0.8, 1.0), **extra):
    """A peer's record as run_one.py / lme4_fit.R store it."""
    record = {
        "status": "ok", "seconds": seconds, "loglik": loglik,
        "fixef": {"(Intercept)": beta[0], "x1": beta[1]},
        "varcorr": [{"grp": "g1", "var1": "(Intercept)", "var2": None, "sdcor": sds[0]},
                    {"grp": "Residual", "var1": None, "var2": None, "sdcor": sds[1]}],
        "peak_rss": 300 * MiB, "peak_increment": 100 * MiB, "input_bytes": 100 * MiB,
        "run_id": RUN, "environment": {"host": "test"},
    }
    record.update(extra)
    return record


def stored(case_name, **peers):
    return {"case": case_name, "spec": CASES[case_name].spec(), "peers": peers}


# -- targets -------------------------------------------------------------------------------
@pytest.mark.parametrize("ours, lme4, status", [
    (1.0, 19.9, NOT_MET),
    (1.0, 20.0, MET),
    (2.0, 100.0, MET),
])
def test_speed_target_is_met_from_twenty_times_faster(ours, lme4, status):
    verdict = targets.FasterThanPeer(20).judge({"glmm_sparse": fit(ours), "lme4": fit(lme4)})
    assert verdict.status == status


def test_a_fast_fit_at_a_lower_optimum_does_not_meet_the_target():
    verdict = targets.FasterThanPeer(20).judge({"glmm_sparse": fit(1.0, loglik=-1000.5),
                                        "lme4": fit(100.0, loglik=-1000.0)})
    assert verdict.status == NOT_MET and "lower" in verdict.detail


@pytest.mark.parametrize("limit, status", [(1800.0, MET), (10.0, UNKNOWN)])
def test_a_stopped_peer_gives_a_lower_bound(limit, status):
    records = {"glmm_sparse": fit(30.0), "lme4": {"status": "timeout", "limit": limit}}
    assert targets.FasterThanPeer(20).judge(records).status == status


@pytest.mark.parametrize("ours, lme4, status", [
    ({"status": "failed", "error": "boom"}, fit(10.0), NOT_MET),
    ({"status": "timeout", "limit": 3600.0}, fit(10.0), NOT_MET),
    (None, fit(10.0), UNKNOWN),
    (fit(1.0), None, UNKNOWN),
    (fit(1.0), {"status": "skipped", "reason": "no R"}, UNKNOWN),
    (fit(1.0), {"status": "failed", "error": "R said no"}, UNKNOWN),
])
def test_missing_or_failed_fits(ours, lme4, status):
    records = {k: v for k, v in (("glmm_sparse", ours), ("lme4", lme4)) if v is not None}
    assert targets.FasterThanPeer(20).judge(records).status == status


@pytest.mark.parametrize("ours_s, increment, status", [
    (29.0, 150 * MiB, MET),
    (31.0, 150 * MiB, NOT_MET),  # slower than 3x OLS
    (29.0, 200 * MiB, NOT_MET),  # adds 2x the input
])
def test_near_ols_needs_time_and_memory(ours_s, increment, status):
    records = {"glmm_sparse": fit(ours_s, peak_increment=increment), "ols": fit(10.0)}
    assert targets.NearOls(time_ratio=3, memory_ratio=2).judge(records).status == status


def test_memory_bound_counts_the_factor_when_known():
    ours = fit(100.0, peak_increment=250 * MiB)  # input 100 MiB: 2x input = 200 MiB
    assert targets.MemoryBound(2).judge({"glmm_sparse": ours}).status == NOT_MET
    with_factor = dict(ours, factor_nnz=10 * MiB)  # 12 bytes an entry: 120 MiB
    assert targets.MemoryBound(2).judge({"glmm_sparse": with_factor}).status == MET


def test_memory_bound_of_a_count_class_fit_counts_the_sparse_routes_factor():
    """A fit through the count classes holds no L: the bound allows for the factor a sparse
    Cholesky fit needs (its symbolic nnz(L)), and says so."""
    ours = fit(100.0, peak_increment=250 * MiB)
    classes = dict(ours, sparse_factor_nnz=10 * MiB)
    verdict = targets.MemoryBound(2).judge({"glmm_sparse": classes})
    assert verdict.status == MET and "the sparse route's factor, 120 MiB" in verdict.detail
    too_much = dict(classes, peak_increment=330 * MiB)  # above 200 + 120 MiB
    assert targets.MemoryBound(2).judge({"glmm_sparse": too_much}).status == NOT_MET


def test_agreement_only_cases_have_no_verdict():
    assert targets.NoTarget().judge({"glmm_sparse": fit(1.0)}).status == NONE


# -- agreement ---------------------------------------------------------------------------
def test_agreement_signs_and_scales():
    a = agreement(fit(1.0, loglik=-99.0, beta=(1.0, 0.5), sds=(0.8, 1.0)),
                  fit(2.0, loglik=-100.0, beta=(1.1, 0.5), sds=(0.8, 0.5)))
    assert a.loglik_diff == pytest.approx(1.0)  # positive: our optimum is higher
    assert a.fixef_max_abs == pytest.approx(0.1)
    assert a.sd_max_rel == pytest.approx(1.0)  # |1.0 - 0.5| / 0.5
    assert a.corr_max_abs is None and a.unmatched == ()


@pytest.mark.parametrize("name, lme4_name", [
    ("Intercept", "(Intercept)"), ("service[T.1]", "service1"), ("x1", "x1"),
])
def test_statsmodels_names_become_lme4_names(name, lme4_name):
    assert targets.fixef_name(name) == lme4_name


def test_agreement_matches_rows_by_name_and_reports_the_rest():
    ours = fit(1.0)
    theirs = fit(1.0)
    theirs["fixef"] = {"Intercept": 1.0, "x2": 0.0}
    theirs["varcorr"] = theirs["varcorr"] + [
        {"grp": "g1", "var1": "(Intercept)", "var2": "x1", "sdcor": 0.3}]
    a = agreement(ours, theirs)
    assert a.fixef_max_abs == 0.0
    assert set(a.unmatched) == {"x1", "x2", "g1/(Intercept)/x1"}


def test_no_agreement_without_both_fits():
    assert agreement(fit(1.0), {"status": "timeout", "limit": 10.0}) is None


# -- the doc section -------------------------------------------------------------------------
def row_of(text, case_name):
    return next(line for line in text.splitlines() if line.startswith(f"| `{case_name}`"))


def test_section_reports_a_slow_case_not_met_and_lists_every_case():
    results = {"crossed_1e6": stored("crossed_1e6", glmm_sparse=fit(10.0), lme4=fit(150.0))}
    text = report.section(CASES, results)
    row = row_of(text, "crossed_1e6")
    assert "15.0x" in row and "**NOT met**: 15.0x < 20x" in row
    assert "`make bench-peers PEERS=crossed_1e6`" in row
    assert "2025-01-02 03:04 UTC, test (E1)" in row
    for name in CASES:
        assert row_of(text, name)
    assert "not run yet" in row_of(text, "crossed_1e7")


def test_section_shows_limits_and_ignores_records_of_another_spec():
    slow = stored("slopes_1e6", glmm_sparse=fit(60.0),
                  lme4={"status": "timeout", "limit": 1800.0},
                  statsmodels={"status": "timeout", "limit": 600.0})
    stale = dict(stored("insteval", glmm_sparse=fit(1.0), lme4=fit(100.0)),
                 spec={"formula": "y ~ 1 + (1 | s)"})
    text = report.section(CASES, {"slopes_1e6": slow, "insteval": stale})
    row = row_of(text, "slopes_1e6")
    assert "> 30 min" in row and "> 30.0x" in row and "sm > 10 min" in row
    assert "**met**" in row
    assert "not run yet" in row_of(text, "insteval")


def test_splice_replaces_only_the_section():
    doc = "# B\n\nIntro line one,\nline two.\n\n## Other\n\nkept\n"
    once = report.splice(doc, "first\n")
    assert once == ("# B\n\nIntro line one,\nline two.\n\n<!-- peers:begin -->\nfirst\n"
                    "<!-- peers:end -->\n\n## Other\n\nkept\n")
    twice = report.splice(once.replace("kept", "edited by others"), "second\n")
    assert "first" not in twice and "second\n<!-- peers:end -->" in twice
    assert twice.endswith("## Other\n\nedited by others\n")


# -- the harness -------------------------------------------------------------------------------
def test_merge_keeps_other_peers_and_never_lets_a_skip_replace_a_result():
    case = CASES["scalar_1e5"]
    old = stored("scalar_1e5", glmm_sparse=fit(1.0), lme4=fit(5.0), statsmodels=fit(9.0))
    new = {"glmm_sparse": fit(0.5), "lme4": {"status": "skipped", "reason": "no R"}}
    merged = harness.merge(case, old, new)
    assert merged["peers"]["glmm_sparse"]["seconds"] == 0.5
    assert merged["peers"]["lme4"]["seconds"] == 5.0
    assert merged["peers"]["statsmodels"]["seconds"] == 9.0
    stale = dict(old, spec={"rows": 1})
    assert set(harness.merge(case, stale, new)["peers"]) == {"glmm_sparse", "lme4"}


def test_merged_results_round_trip_through_json(tmp_path):
    harness.save(CASES["scalar_1e5"], {"glmm_sparse": fit(0.5)}, tmp_path)
    loaded = report.load_results(tmp_path)
    assert json.loads(json.dumps(loaded))["scalar_1e5"]["peers"]["glmm_sparse"]["seconds"] == 0.5


def test_a_fit_process_that_runs_too_long_is_stopped():
    record = harness.run_fit([sys.executable, "-c", "import time; time.sleep(30)"], 0.5)
    assert record["status"] == "timeout" and record["limit"] == 0.5


def test_a_fit_process_that_dies_is_reported_failed():
    record = harness.run_fit([sys.executable, "-c", "import sys; sys.exit('no luck')"], 30)
    assert record["status"] == "failed" and "no luck" in record["error"]


@pytest.mark.parametrize("argv", [["no_such_case"], ["--peers", "glmm_sparse,spss"],
                                  ["--limit", "lme4"]])
def test_bad_arguments_are_refused(argv):
    with pytest.raises(SystemExit):
        harness.parse_args(argv)


def test_peers_and_limits_are_parsed():
    args = harness.parse_args(["crossed_1e6", "--peers", "glmm_sparse", "--limit", "lme4=60"])
    assert args.cases == ["crossed_1e6"] and args.peers == ["glmm_sparse"]
    assert args.limits["lme4"] == 60.0 and args.limits["statsmodels"] == 600.0
