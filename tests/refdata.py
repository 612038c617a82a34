"""Reference data and lme4 results for the tests (provenance: tests/reference/README.md)."""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

REFERENCE = Path(__file__).parent / "reference"
SETS = {"shared": REFERENCE, "extra": REFERENCE / "extra", "glmm": REFERENCE / "glmm"}


@lru_cache(maxsize=None)
def load_data(name: str, base: str = "shared") -> pd.DataFrame:
    """A reference data set with factor columns as Categoricals in the schema's level order."""
    root = SETS[base]
    schema = json.loads((root / "data" / f"{name}.schema.json").read_text())
    factors = {c["name"]: c["levels"] for c in schema["columns"] if c["type"] == "factor"}
    df = pd.read_csv(root / "data" / f"{name}.csv", dtype={c: str for c in factors})
    for col, levels in factors.items():
        df[col] = pd.Categorical(df[col], categories=levels)
    return df


def as_list(value):
    """jsonlite writes length-1 vectors as scalars."""
    return value if isinstance(value, list) else [value]


def load_case(case_id: str, base: str = "shared") -> dict:
    ref = json.loads((SETS[base] / "lme4" / f"{case_id}.json").read_text())
    for key in ("theta", "theta_names", "beta", "beta_names", "beta_se", "fitted_head"):
        ref[key] = as_list(ref[key])
    ref["vcov_beta"] = np.atleast_2d(np.asarray(ref["vcov_beta"], dtype=float))
    return ref


def case_ids(family: str = "gaussian") -> list[tuple[str, str]]:
    """(base, case id) of every reference case of a family ("glmm": every non-gaussian one)."""
    out = []
    for base, root in SETS.items():
        for path in sorted((root / "lme4").glob("*.json")):
            fam = json.loads(path.read_text())["family"]
            if fam == family or (family == "glmm" and fam != "gaussian"):
                out.append((base, path.stem))
    return out


def glmer_args(ref: dict) -> dict:
    """glmer keyword arguments of a reference case (family and link names as R writes them)."""
    fam = ref["family"]
    family = {"Gamma": "gamma", "Gamma_log": "gamma", "inverse.gaussian": "inverse_gaussian"}.get(fam, fam)
    link = "log" if fam == "Gamma_log" else ref.get("link")
    return {"family": family, "link": link, "nagq": ref["nAGQ"], "weights": ref["weights"],
            "offset": ref.get("offset")}
