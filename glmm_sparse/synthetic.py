"""Seeded synthetic data with known truth, for demos, benchmarks and the scale tests.

A ``Design`` says which model the data come from: grouping factors g1, g2, ... (crossed,
or g2 nested in g1), an optional correlated random slope of x1 on g1, the number of
fixed covariates, and the family (gaussian, binomial, poisson). The random effects are
drawn once per level from the seed; the rows are drawn in fixed chunks, each from its
own child of the seed, so that ``simulate`` (one DataFrame in memory) and
``write_parquet`` (one row group per chunk, never more than a chunk in memory) give the
very same rows for the same seed, from 10^3 to 10^8 rows.

``insteval_like`` mimics lme4's InstEval: students x lecturers crossed, plus a 28-level
department:service term.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

FAMILIES = ("gaussian", "binomial", "poisson")
CHUNK_ROWS = 1 << 20  # rows drawn per chunk; part of the seed's meaning, so fixed


@dataclass(frozen=True)
class Truth:
    """The parameters the data were drawn from (``b``: each factor's level effects)."""

    beta: np.ndarray
    sd: tuple[float, ...]
    sigma: float
    slope_sd: float | None = None
    slope_corr: float | None = None
    b: tuple[np.ndarray, ...] = field(default=(), repr=False)


@dataclass(frozen=True)
class Design:
    """The model behind the data.

    levels : levels of g1, g2, ...; crossed unless ``nested``, where levels[1] is the
        number of g2 levels within each g1 level (g2 labels are unique across g1).
    slope : a random slope of x1 on g1, correlated with its intercept.
    """

    levels: tuple[int, ...] = (1000,)
    nested: bool = False
    slope: bool = False
    n_fixed: int = 2
    family: str = "gaussian"
    sd: tuple[float, ...] | None = None
    sigma: float = 1.0
    slope_sd: float = 0.3
    slope_corr: float = 0.3

    def __post_init__(self):
        if not self.levels or any(int(nl) < 2 for nl in self.levels):
            raise ValueError(f"every grouping factor needs at least 2 levels, not {self.levels}")
        if self.nested and len(self.levels) != 2:
            raise ValueError("a nested design has exactly two factors: levels=(outer, inner)")
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}, not {self.family!r}")
        if self.slope and self.n_fixed < 1:
            raise ValueError("a random slope of x1 needs n_fixed >= 1")
        if self.sd is not None and len(self.sd) != len(self.levels):
            raise ValueError(f"sd needs one value per grouping factor ({len(self.levels)})")

    @property
    def n_levels(self) -> tuple[int, ...]:
        """The number of distinct levels of each factor (nested g2: outer x inner)."""
        if self.nested:
            return (self.levels[0], self.levels[0] * self.levels[1])
        return tuple(int(nl) for nl in self.levels)

    @property
    def sds(self) -> tuple[float, ...]:
        default = tuple(0.8 / (1 + i) for i in range(len(self.levels)))
        return tuple(self.sd) if self.sd is not None else default

    def formula(self) -> str:
        """The lme4 formula of the model the data come from."""
        fixed = " + ".join(f"x{j + 1}" for j in range(self.n_fixed)) or "1"
        response = "y"
        if self.nested:
            first = "1 + x1" if self.slope else "1"
            terms = [f"({first} | g1)", "(1 | g2)"]
        else:
            terms = [f"({'1 + x1' if self.slope and i == 0 else '1'} | g{i + 1})"
                     for i in range(len(self.levels))]
        return f"{response} ~ {fixed} + " + " + ".join(terms)


def _beta(n_fixed: int, family: str) -> np.ndarray:
    if family == "gaussian":
        return np.concatenate([[1.0], np.linspace(0.5, -0.5, n_fixed)])
    return np.concatenate([[-0.5 if family == "binomial" else 0.5],
                           np.linspace(0.3, -0.3, n_fixed)])


def draw_truth(design: Design, seed: int) -> Truth:
    """The fixed effects and each level's random effects, from the seed's first child."""
    rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(1)[0])
    bs = []
    for nl, s in zip(design.n_levels, design.sds):
        bs.append(s * rng.standard_normal(nl))
    if design.slope:
        z = rng.standard_normal(design.n_levels[0])
        s0, r = design.sds[0], design.slope_corr
        bs.append(design.slope_sd * (r * bs[0] / s0 + np.sqrt(1 - r * r) * z))
    return Truth(_beta(design.n_fixed, design.family), design.sds, design.sigma,
                 design.slope_sd if design.slope else None,
                 design.slope_corr if design.slope else None, tuple(bs))


def _chunk_arrays(design: Design, truth: Truth, n: int, rng) -> dict[str, np.ndarray]:
    """One chunk of rows: y, x1.., and int32 codes of g1, g2, ..."""
    X = rng.standard_normal((n, design.n_fixed))
    eta = truth.beta[0] + X @ truth.beta[1:]
    if design.nested:
        outer = rng.integers(0, design.levels[0], n)
        codes = [outer, outer * design.levels[1] + rng.integers(0, design.levels[1], n)]
    else:
        codes = [rng.integers(0, nl, n) for nl in design.levels]
    for code, b in zip(codes, truth.b):
        eta += b[code]
    if design.slope:
        eta += truth.b[-1][codes[0]] * X[:, 0]
    noise = rng.standard_normal(n) if design.family == "gaussian" else rng.random(n)
    if design.family == "gaussian":
        y = eta + design.sigma * noise
    elif design.family == "binomial":
        y = (noise < 1.0 / (1.0 + np.exp(-eta))).astype(np.float64)
    else:
        y = rng.poisson(np.exp(eta)).astype(np.float64)
    out = {"y": y}
    out.update({f"x{j + 1}": X[:, j] for j in range(design.n_fixed)})
    out.update({f"g{i + 1}": c.astype(np.int32) for i, c in enumerate(codes)})
    return out


def chunks(design: Design, n_rows: int, *, seed: int = 0, chunk_rows: int = CHUNK_ROWS):
    """The rows as (start, dict of arrays) per chunk, each chunk from its own seed child.

    The same (design, n_rows, seed) always gives the same rows, whatever reads them;
    ``chunk_rows`` is part of the stream's definition, keep the default for comparisons.
    """
    if n_rows < 2:
        raise ValueError(f"need at least 2 rows, not {n_rows}")
    truth = draw_truth(design, seed)
    n_chunks = -(-n_rows // chunk_rows)
    children = np.random.SeedSequence(seed).spawn(1 + n_chunks)[1:]
    for i, child in enumerate(children):
        start = i * chunk_rows
        n = min(chunk_rows, n_rows - start)
        yield start, _chunk_arrays(design, truth, n, np.random.default_rng(child))


def _labels(prefix: str, nlev: int) -> list[str]:
    return [f"{prefix}{i + 1}" for i in range(nlev)]


def simulate(design: Design, n_rows: int, *, seed: int = 0) -> tuple[pd.DataFrame, Truth]:
    """All rows in one pandas DataFrame (grouping factors as Categoricals) and the truth.

    Columns are filled chunk by chunk into preallocated arrays: peak memory is the frame
    plus one chunk.
    """
    cols: dict[str, np.ndarray] = {}
    for start, arrays in chunks(design, n_rows, seed=seed):
        for name, values in arrays.items():
            if name not in cols:
                cols[name] = np.empty(n_rows, dtype=values.dtype)
            cols[name][start:start + len(values)] = values
    for i, nl in enumerate(design.n_levels):
        name = f"g{i + 1}"
        cols[name] = pd.Categorical.from_codes(cols[name], categories=_labels(f"{name}_", nl))
    return pd.DataFrame(cols, copy=False), draw_truth(design, seed)


def write_parquet(path, design: Design, n_rows: int, *, seed: int = 0,
                  compression: str = "snappy") -> Path:
    """Write the rows of ``simulate(design, n_rows, seed=seed)`` to one Parquet file,
    a row group per chunk, holding one chunk in memory at a time. Grouping factors are
    dictionary-encoded strings (they read back as Categoricals)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    dictionaries = {f"g{i + 1}": pa.array(_labels(f"g{i + 1}_", nl))
                    for i, nl in enumerate(design.n_levels)}
    writer = None
    try:
        for _, arrays in chunks(design, n_rows, seed=seed):
            columns = {}
            for name, values in arrays.items():
                if name in dictionaries:
                    columns[name] = pa.DictionaryArray.from_arrays(values, dictionaries[name])
                else:
                    columns[name] = pa.array(values)
            table = pa.table(columns)
            if writer is None:
                writer = pq.ParquetWriter(path, table.schema, compression=compression)
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()
    return path


# -- lme4's InstEval, in shape ------------------------------------------------------------
INSTEVAL_FORMULA = "y ~ service + (1 | s) + (1 | d) + (1 | dept:service)"


def insteval_like(n_rows: int = 73_421, *, seed: int = 0, n_students: int = 2972,
                  n_lecturers: int = 1128, n_depts: int = 14) -> tuple[pd.DataFrame, Truth]:
    """Ratings shaped like lme4's InstEval: students s x lecturers d crossed, each
    lecturer in one department, a two-level service factor and the 28-level
    dept:service term; fit with ``INSTEVAL_FORMULA``. Truth: sd = (s, d, dept:service)."""
    rng = np.random.default_rng(seed)
    sd = (0.32, 0.52, 0.26)
    b_s, b_d = sd[0] * rng.standard_normal(n_students), sd[1] * rng.standard_normal(n_lecturers)
    b_ds = sd[2] * rng.standard_normal((n_depts, 2))
    dept_of = rng.integers(0, n_depts, n_lecturers)
    s, d = rng.integers(0, n_students, n_rows), rng.integers(0, n_lecturers, n_rows)
    service = rng.integers(0, 2, n_rows)
    beta = np.array([3.2, -0.07])
    y = (beta[0] + beta[1] * service + b_s[s] + b_d[d] + b_ds[dept_of[d], service]
         + 1.18 * rng.standard_normal(n_rows))
    frame = pd.DataFrame({
        "y": y,
        "service": pd.Categorical.from_codes(service, categories=["0", "1"]),
        "s": pd.Categorical.from_codes(s, categories=_labels("s", n_students)),
        "d": pd.Categorical.from_codes(d, categories=_labels("d", n_lecturers)),
        "dept": pd.Categorical.from_codes(dept_of[d], categories=_labels("dept", n_depts)),
    })
    return frame, Truth(beta, sd, 1.18, b=(b_s, b_d, b_ds.ravel()))
