# Extra lme4 reference fits on SIMULATED data (seeded), in the same JSON format as
# /work/shared/reference (generate_lme4.R there): data/NAME.csv + data/NAME.schema.json and
# lme4/CASE.json.  All cases are gaussian LMMs.
# Usage (from this folder):  Rscript generate_extra.R .
# Needs R with lme4 and jsonlite (Debian: r-base-core r-cran-lme4 r-cran-jsonlite).
suppressMessages({library(lme4); library(jsonlite); })
args <- commandArgs(TRUE); outdir <- if (length(args) >= 1) args[1] else "."
dir.create(file.path(outdir, "data"), recursive = TRUE, showWarnings = FALSE)
dir.create(file.path(outdir, "lme4"), recursive = TRUE, showWarnings = FALSE)

# ---- helpers copied from generate_lme4.R -------------------------------------------------
# Reorder factor levels the way a Python reader would: numeric order when all
# labels are integers, otherwise byte (C-locale) order.
py_levels <- function(f) {
  lv <- levels(f)
  if (all(grepl("^-?[0-9]+$", lv))) lv[order(as.numeric(lv))] else sort(lv, method = "radix")
}
prep <- function(d) {
  d <- as.data.frame(d)
  for (nm in names(d)) {
    if (is.factor(d[[nm]])) d[[nm]] <- factor(as.character(d[[nm]]), levels = py_levels(d[[nm]]))
    if (is.character(d[[nm]])) d[[nm]] <- factor(d[[nm]], levels = sort(unique(d[[nm]]), method = "radix"))
  }
  d
}
write_data <- function(name, d) {
  f <- file.path(outdir, "data", paste0(name, ".csv"))
  write.csv(d, f, row.names = FALSE, na = "")
  schema <- lapply(names(d), function(nm) {
    if (is.factor(d[[nm]])) list(name = nm, type = "factor", levels = levels(d[[nm]]))
    else list(name = nm, type = if (is.integer(d[[nm]])) "integer" else "float")
  })
  write_json(list(rows = nrow(d), columns = schema), file.path(outdir, "data", paste0(name, ".schema.json")),
             auto_unbox = TRUE, pretty = TRUE, digits = NA)
}
vc_list <- function(m) {
  vc <- as.data.frame(VarCorr(m))
  lapply(seq_len(nrow(vc)), function(i) list(grp = vc$grp[i], var1 = vc$var1[i], var2 = if (is.na(vc$var2[i])) NULL else vc$var2[i],
                                             vcov = vc$vcov[i], sdcor = vc$sdcor[i]))
}
ranef_list <- function(m) {
  re <- as.data.frame(ranef(m, condVar = TRUE))
  lapply(seq_len(nrow(re)), function(i) list(group = as.character(re$grpvar[i]), term = as.character(re$term[i]),
                                             level = as.character(re$grp[i]), value = re$condval[i], condsd = re$condsd[i]))
}

# ---- extra helpers -----------------------------------------------------------------------
# Simulated numeric columns are rounded to 6 decimals (weights to 4) before fitting, so the CSV
# holds them exactly: R's round() returns the double nearest to the short decimal, which is what
# a correctly rounding reader (Python float, pandas "round_trip") gets from data/NAME.csv.
# read_back() re-reads each CSV and checks it against the data that are fitted (up to R's own
# slightly inexact strtod), then the in-memory (exact) data are fitted.
rnd <- function(x) round(x, 6)
lab <- function(prefix, i) paste0(prefix, i)          # "g1","g2",...,"g10": byte order != numeric order
rmvn <- function(n, Sigma) matrix(rnorm(n * ncol(Sigma)), n) %*% chol(Sigma)
cov_from <- function(sds, corr) diag(sds) %*% corr %*% diag(sds)
read_back <- function(name, d) {
  r <- read.csv(file.path(outdir, "data", paste0(name, ".csv")), stringsAsFactors = FALSE)
  for (nm in names(d)) {
    if (is.factor(d[[nm]])) r[[nm]] <- factor(as.character(r[[nm]]), levels = levels(d[[nm]]))
    else if (is.integer(d[[nm]])) r[[nm]] <- as.integer(r[[nm]])
    else r[[nm]] <- as.numeric(r[[nm]])
  }
  stopifnot(nrow(r) == nrow(d), !anyNA(r), isTRUE(all.equal(r, d, check.attributes = FALSE, tolerance = 1e-13)))
  d
}

# ---- simulated data sets (one seed each) ----------------------------------------------------
datasets <- list()

# 1. crossed_large: 2000 x 150 crossed, unbalanced (each row random g1, g2)
set.seed(20240101)
n <- 20000
i1 <- sample.int(2000, n, replace = TRUE); i2 <- sample.int(150, n, replace = TRUE)
u1 <- rnorm(2000, 0, 0.8); u2 <- rnorm(150, 0, 0.5); x <- rnorm(n)
datasets$crossed_large <- prep(data.frame(y = rnd(1 + 0.5 * x + u1[i1] + u2[i2] + rnorm(n)), x = rnd(x),
                                          g1 = lab("g", i1), g2 = lab("h", i2), stringsAsFactors = FALSE))

# 2. nested_3level: 60 schools, 4-7 classes ("c1".."c7" re-used in every school), 3-12 pupils
set.seed(20240102)
rows <- list()
for (s in 1:60) {
  us <- rnorm(1, 0, 0.7)
  for (k in seq_len(sample(4:7, 1))) {
    uc <- rnorm(1, 0, 0.5); np <- sample(3:12, 1); x <- rnorm(np)
    rows[[length(rows) + 1]] <- data.frame(y = 2 + 0.3 * x + us + uc + rnorm(np), x = x,
                                           school = lab("s", s), class = lab("c", k), stringsAsFactors = FALSE)
  }
}
d <- do.call(rbind, rows); d$y <- rnd(d$y); d$x <- rnd(d$x)
datasets$nested_3level <- prep(d)

# 3. slopes_corr: 300 groups of size 2-20, (1 + x | g), corr 0.4
set.seed(20240103)
ng <- 300; sz <- sample(2:20, ng, replace = TRUE); gi <- rep(seq_len(ng), sz); n <- length(gi)
b <- rmvn(ng, cov_from(c(1, 0.5), matrix(c(1, 0.4, 0.4, 1), 2)))
x <- rnorm(n)
datasets$slopes_corr <- prep(data.frame(y = rnd(1 - 0.7 * x + b[gi, 1] + b[gi, 2] * x + rnorm(n, 0, 0.8)),
                                        x = rnd(x), g = lab("g", gi), stringsAsFactors = FALSE))

# 4. block3x3: 200 groups, 5-15 rows, (1 + x1 + x2 | g) with correlated 3x3 covariance
set.seed(20240104)
ng <- 200; sz <- sample(5:15, ng, replace = TRUE); gi <- rep(seq_len(ng), sz); n <- length(gi)
S3 <- cov_from(c(1, 0.6, 0.4), matrix(c(1, 0.3, -0.4, 0.3, 1, 0.2, -0.4, 0.2, 1), 3))
b <- rmvn(ng, S3); x1 <- rnorm(n); x2 <- runif(n, -1, 1)
datasets$block3x3 <- prep(data.frame(y = rnd(0.5 + 1 * x1 - 0.5 * x2 + b[gi, 1] + b[gi, 2] * x1 + b[gi, 3] * x2 + rnorm(n)),
                                     x1 = rnd(x1), x2 = rnd(x2), g = lab("g", gi), stringsAsFactors = FALSE))

# 5. weighted: 100 groups, prior weights w in [0.2, 5], residual variance sigma^2 / w
set.seed(20240105)
ng <- 100; sz <- sample(3:15, ng, replace = TRUE); gi <- rep(seq_len(ng), sz); n <- length(gi)
w <- round(exp(runif(n, log(0.2), log(5))), 4); x <- rnorm(n); u <- rnorm(ng, 0, 0.7)
datasets$weighted <- prep(data.frame(y = rnd(3 + 0.8 * x + u[gi] + rnorm(n, 0, 1.2 / sqrt(w))), x = rnd(x), w = w,
                                     g = lab("g", gi), stringsAsFactors = FALSE))

# 6. factor_slope: y ~ f + (0 + f | g), f in a/b/c, 150 groups, 1-5 rows per (g, f) cell
set.seed(20240106)
ng <- 150
S3f <- cov_from(c(0.8, 1.0, 0.6), matrix(c(1, 0.5, 0.3, 0.5, 1, 0.6, 0.3, 0.6, 1), 3))
b <- rmvn(ng, S3f); rows <- list()
for (g in seq_len(ng)) for (k in 1:3) {
  nn <- sample(1:5, 1)
  rows[[length(rows) + 1]] <- data.frame(y = c(1, 1.5, 0.2)[k] + b[g, k] + rnorm(nn), f = letters[k], g = lab("g", g),
                                         stringsAsFactors = FALSE)
}
d <- do.call(rbind, rows); d$y <- rnd(d$y)
datasets$factor_slope <- prep(d)

# 7. crossed_slopes_ml: (1 + x | g1) with 400 levels, (1 | g2) with 40 levels, 8000 rows
set.seed(20240107)
n <- 8000; i1 <- sample.int(400, n, replace = TRUE); i2 <- sample.int(40, n, replace = TRUE)
b1 <- rmvn(400, cov_from(c(0.9, 0.4), matrix(c(1, -0.3, -0.3, 1), 2))); u2 <- rnorm(40, 0, 0.6); x <- rnorm(n)
datasets$crossed_slopes <- prep(data.frame(y = rnd(-1 + 0.4 * x + b1[i1, 1] + b1[i1, 2] * x + u2[i2] + rnorm(n)),
                                           x = rnd(x), g1 = lab("g", i1), g2 = lab("h", i2), stringsAsFactors = FALSE))

# 8. offset: y ~ x + offset(o) + (1 | g), o = log(exposure), 80 groups
set.seed(20240108)
ng <- 80; sz <- sample(3:12, ng, replace = TRUE); gi <- rep(seq_len(ng), sz); n <- length(gi)
o <- rnd(log(runif(n, 0.5, 10))); x <- rnorm(n); u <- rnorm(ng, 0, 0.5)
datasets$offset <- prep(data.frame(y = rnd(0.5 + 0.6 * x + o + u[gi] + rnorm(n, 0, 0.7)), x = rnd(x), o = o,
                                   g = lab("g", gi), stringsAsFactors = FALSE))

# 9. zerocorr3: y ~ x1 + x2 + (x1 + x2 || g), 150 groups
set.seed(20240109)
ng <- 150; sz <- sample(4:12, ng, replace = TRUE); gi <- rep(seq_len(ng), sz); n <- length(gi)
b <- cbind(rnorm(ng, 0, 0.9), rnorm(ng, 0, 0.5), rnorm(ng, 0, 0.3)); x1 <- rnorm(n); x2 <- rnorm(n)
datasets$zerocorr3 <- prep(data.frame(y = rnd(2 + 0.5 * x1 + 0.25 * x2 + b[gi, 1] + b[gi, 2] * x1 + b[gi, 3] * x2 + rnorm(n)),
                                      x1 = rnd(x1), x2 = rnd(x2), g = lab("g", gi), stringsAsFactors = FALSE))

# 10. interaction_group: a 30 levels, b 5 levels, ~20% of (a, b) combinations absent
set.seed(20240110)
combos <- expand.grid(b = 1:5, a = 1:30); combos <- combos[sample(nrow(combos), round(0.8 * nrow(combos))), ]
combos <- combos[order(combos$a, combos$b), ]
ua <- rnorm(30, 0, 0.8); uab <- rnorm(nrow(combos), 0, 0.5); rows <- list()
for (k in seq_len(nrow(combos))) {
  nn <- sample(3:10, 1); x <- rnorm(nn)
  rows[[k]] <- data.frame(y = 1 + 0.4 * x + ua[combos$a[k]] + uab[k] + rnorm(nn, 0, 0.9), x = x,
                          a = lab("a", combos$a[k]), b = lab("b", combos$b[k]), stringsAsFactors = FALSE)
}
d <- do.call(rbind, rows); d$y <- rnd(d$y); d$x <- rnd(d$x)
datasets$interaction_group <- prep(d)

# ---- cases --------------------------------------------------------------------------------
cases <- list(
  list(id = "crossed_large", data = "crossed_large", formula = "y ~ x + (1 | g1) + (1 | g2)", REML = TRUE),
  list(id = "nested_3level", data = "nested_3level", formula = "y ~ x + (1 | school/class)", REML = TRUE),
  list(id = "slopes_corr", data = "slopes_corr", formula = "y ~ x + (1 + x | g)", REML = FALSE),
  list(id = "block3x3", data = "block3x3", formula = "y ~ x1 + x2 + (1 + x1 + x2 | g)", REML = TRUE),
  list(id = "weighted", data = "weighted", formula = "y ~ x + (1 | g)", REML = TRUE, weights = "w"),
  list(id = "weighted_ml", data = "weighted", formula = "y ~ x + (1 | g)", REML = FALSE, weights = "w"),
  list(id = "factor_slope", data = "factor_slope", formula = "y ~ f + (0 + f | g)", REML = TRUE),
  list(id = "crossed_slopes_ml", data = "crossed_slopes", formula = "y ~ x + (1 + x | g1) + (1 | g2)", REML = FALSE),
  list(id = "offset", data = "offset", formula = "y ~ x + offset(o) + (1 | g)", REML = TRUE),
  list(id = "zerocorr3", data = "zerocorr3", formula = "y ~ x1 + x2 + (x1 + x2 || g)", REML = TRUE),
  list(id = "interaction_group", data = "interaction_group", formula = "y ~ x + (1 | a) + (1 | a:b)", REML = TRUE)
)

used <- unique(sapply(cases, `[[`, "data"))
for (nm in used) { write_data(nm, datasets[[nm]]); datasets[[nm]] <- read_back(nm, datasets[[nm]]) }
for (cs in cases) {
  d <- datasets[[cs$data]]; f <- as.formula(cs$formula)
  t0 <- proc.time()[["elapsed"]]
  if (is.null(cs$weights)) {
    m <- lmer(f, d, REML = cs$REML)
  } else {
    # lmer evaluates `weights` in the data frame: pass the column name as a symbol
    m <- eval(substitute(lmer(f, data = d, REML = cs$REML, weights = W), list(W = as.name(cs$weights))))
  }
  secs <- proc.time()[["elapsed"]] - t0
  s <- summary(m)
  res <- list(
    id = cs$id, data = cs$data, formula = cs$formula, family = "gaussian",
    REML = cs$REML, nAGQ = 1, weights = cs$weights,
    lme4_version = as.character(packageVersion("lme4")), lme4_seconds = secs,
    nobs = nobs(m), ngrps = as.list(ngrps(m)),
    objective = if (cs$REML) REMLcrit(m) else deviance(m),
    deviance_ml = deviance(m, REML = FALSE),
    logLik = as.numeric(logLik(m)), logLik_lme4 = as.numeric(logLik(m)), df = attr(logLik(m), "df"),
    AIC = AIC(m), BIC = BIC(m),
    theta = unname(getME(m, "theta")), theta_names = names(getME(m, "theta")),
    beta = unname(fixef(m)), beta_names = names(fixef(m)),
    beta_se = unname(sqrt(diag(as.matrix(vcov(m))))),
    vcov_beta = unname(as.matrix(vcov(m))),
    sigma = sigma(m), singular = isSingular(m),
    varcorr = vc_list(m), ranef = ranef_list(m),
    fitted_head = unname(head(fitted(m), 50)),
    lme4_messages = m@optinfo$conv$lme4$messages
  )
  write_json(res, file.path(outdir, "lme4", paste0(cs$id, ".json")), auto_unbox = TRUE, pretty = TRUE, digits = NA, null = "null")
  msg <- if (is.null(res$lme4_messages)) "-" else paste(res$lme4_messages, collapse = " | ")
  cat(sprintf("%-20s n=%6d %7.3fs obj=%.6f singular=%s messages=%s\n", cs$id, res$nobs, secs, res$objective,
              res$singular, msg))
}
