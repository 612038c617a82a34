"""The benchmark cases of issue 5 and the seeded data every peer fits.

Each case names a model, its data (a ``glmm_sparse.synthetic`` design, or the
InstEval-shaped set), the peers that can fit it and the target glmm_sparse must meet.
The data are drawn once per run from seed 1 and written twice, the same rows: Parquet for
the Python peers and CSV for R.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from glmm_sparse.synthetic import INSTEVAL_FORMULA, Design, insteval_like, simulate, write_parquet

from .targets import FasterThanPeer, MemoryBound, NearOls, NoTarget, Target

PEERS = ("glmm_sparse", "lme4", "statsmodels", "ols")
INSTEVAL_GROUPS = (2972, 1128, 28)  # students s, lecturers d, dept:service


@dataclass(frozen=True)
class Case:
    """One model on one seeded data set; ``design`` None means ``insteval_like``."""

    name: str
    formula: str
    n_rows: int
    peers: tuple[str, ...]
    target: Target
    design: Design | None = None
    sm_formula: str | None = None  # statsmodels MixedLM: fixed part and re_formula
    sm_re_formula: str | None = None
    ols_formula: str | None = None
    seed: int = 1

    @property
    def family(self) -> str:
        return self.design.family if self.design is not None else "gaussian"

    @property
    def groups(self) -> tuple[int, ...]:
        return self.design.n_levels if self.design is not None else INSTEVAL_GROUPS

    @property
    def factor_columns(self) -> tuple[str, ...]:
        if self.design is None:
            return ("service", "s", "d", "dept")
        return tuple(f"g{i + 1}" for i in range(len(self.groups)))

    def spec(self) -> dict:
        """What the data and model are; a stored record counts only if its spec matches."""
        return {"formula": self.formula, "rows": self.n_rows, "groups": list(self.groups),
                "family": self.family, "seed": self.seed}

    def frame(self):
        """All rows as one pandas DataFrame (grouping columns Categorical)."""
        if self.design is None:
            return insteval_like(self.n_rows, seed=self.seed)[0]
        return simulate(self.design, self.n_rows, seed=self.seed)[0]


def _design_case(name, design: Design, n_rows: int, peers, target, **kw) -> Case:
    return Case(name, design.formula(), n_rows, tuple(peers), target, design, **kw)


CASES: dict[str, Case] = {case.name: case for case in (
    Case("insteval", INSTEVAL_FORMULA, 73_421, ("glmm_sparse", "lme4"), FasterThanPeer(20)),
    _design_case("ols_1e7", Design((100_000,), slope=True, n_fixed=5), 10_000_000,
                 ("glmm_sparse", "ols"), NearOls(time_ratio=3, memory_ratio=2),
                 ols_formula="y ~ x1 + x2 + x3 + x4 + x5"),
    _design_case("crossed_1e6", Design((10_000, 1_000)), 1_000_000,
                 ("glmm_sparse", "lme4"), FasterThanPeer(20)),
    _design_case("crossed_1e7", Design((100_000, 1_000)), 10_000_000,
                 ("glmm_sparse",), MemoryBound(memory_ratio=2)),
    _design_case("slopes_1e6", Design((100_000,), slope=True), 1_000_000,
                 ("glmm_sparse", "lme4", "statsmodels"), FasterThanPeer(20),
                 sm_formula="y ~ x1 + x2", sm_re_formula="~x1"),
    _design_case("binomial_1e6", Design((10_000, 1_000), family="binomial"), 1_000_000,
                 ("glmm_sparse", "lme4"), FasterThanPeer(20)),
    _design_case("scalar_1e5", Design((1_000,)), 100_000,
                 ("glmm_sparse", "lme4", "statsmodels"), NoTarget(),
                 sm_formula="y ~ x1 + x2"),
    _design_case("slopes_1e5", Design((1_000,), slope=True), 100_000,
                 ("glmm_sparse", "lme4", "statsmodels"), NoTarget(),
                 sm_formula="y ~ x1 + x2", sm_re_formula="~x1"),
)}


@dataclass(frozen=True)
class DataFiles:
    parquet: Path
    csv: Path | None
    factors: tuple[str, ...]


def write_data(case: Case, directory: Path, *, csv: bool) -> DataFiles:
    """The case's rows as Parquet (chunk by chunk for a design) and, for R, as CSV."""
    directory.mkdir(parents=True, exist_ok=True)
    parquet = directory / f"{case.name}.parquet"
    frame = None
    if case.design is not None:
        write_parquet(parquet, case.design, case.n_rows, seed=case.seed)
    else:
        frame = case.frame()
        frame.to_parquet(parquet, index=False)
    csv_path = None
    if csv:
        frame = case.frame() if frame is None else frame
        csv_path = directory / f"{case.name}.csv"
        frame.to_csv(csv_path, index=False)  # full float precision: R reads the same values
    return DataFiles(parquet, csv_path, case.factor_columns)
