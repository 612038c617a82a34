"""benchmarks/scale_1e8.py's reference read: the fastest of repeated reads, and the
verdict's ratios against it (the script itself runs for minutes; only its arithmetic is
tested here)."""
import argparse
import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "scale_1e8.py"


def load_script():
    spec = importlib.util.spec_from_file_location("scale_1e8", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_fastest_read_is_the_reference_with_every_time_kept():
    script = load_script()
    reads = [{"seconds": 1.9, "peak_mib": 250.0}, {"failed": True, "error": "killed"},
             {"seconds": 0.8, "peak_mib": 240.0}, {"seconds": 1.2, "peak_mib": 260.0}]
    best = script.fastest_read(reads)
    assert best["seconds"] == 0.8 and best["peak_mib"] == 240.0
    assert best["all_seconds"] == [1.9, 0.8, 1.2]
    assert "all_seconds" not in reads[2]  # the runs' own records are left as they were
    failed = [{"failed": True, "error": "killed"}]
    assert script.fastest_read(failed) is failed[0]


def test_the_verdict_divides_each_pass_by_the_faster_read():
    script = load_script()
    fit = {"after_fit": {"peak_mib": 800.0},
           "stages": {"levels_pass": {"seconds": 1.2}, "crossprod_pass": {"seconds": 2.4},
                      "fit_from_sums": {"seconds": 9.0}}}
    v = script.verdict(fit, {"seconds": 9.5}, {"seconds": 1.0})
    assert v["pass_over_read"] == {"levels_pass": 1.2, "crossprod_pass": 2.4}
    assert v["memory_met"] and not v["time_met"]
    assert "2.4x" in v["time"]


def test_read_repeats_must_be_at_least_one():
    script = load_script()
    assert script._at_least_one("3") == 3
    with pytest.raises(argparse.ArgumentTypeError, match="at least 1"):
        script._at_least_one("0")
