# GLMM reference fits (glmer) on SIMULATED data (seeded) plus lme4's cbpp, in the JSON format
# of /work/shared/reference (generate_lme4.R there) and tests/reference/extra, with the extra
# GLMM fields link, offset, dispersion_note (see README.md in this folder).
# Writes data/NAME.csv + data/NAME.schema.json, lme4/CASE.json and summaries/CASE.txt.
# Usage (from this folder):  Rscript generate_glmm.R .
# Needs R with lme4 and jsonlite (Debian: r-base-core r-cran-lme4 r-cran-jsonlite).
suppressMessages({library(lme4); library(jsonlite)})
args <- commandArgs(TRUE); outdir <- if (length(args) >= 1) args[1] else "."
for (sub in c("data", "lme4", "summaries"))
  dir.create(file.path(outdir, sub), recursive = TRUE, showWarnings = FALSE)
options(width = 80, digits = 7)

# ---- helpers (as in generate_lme4.R / generate_extra.R) -------------------------------------
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
# Numeric columns: integers as integers; floats that were rounded to 6 decimals are written by
# write.csv (15 significant digits, so the short decimal is exact); columns listed in `exact`
# (values that are not short decimals: prop = succ/trials, logexp = log(exposure)) are written
# with 17 significant digits, which a correctly rounding reader (Python float, pandas
# float_precision="round_trip") turns back into the identical double.
write_data <- function(name, d, exact = character(0)) {
  out <- d
  for (nm in exact) out[[nm]] <- sprintf("%.17g", d[[nm]])
  write.csv(out, file.path(outdir, "data", paste0(name, ".csv")), row.names = FALSE, na = "",
            quote = which(vapply(d, is.factor, logical(1))))
  schema <- lapply(names(d), function(nm) {
    if (is.factor(d[[nm]])) list(name = nm, type = "factor", levels = levels(d[[nm]]))
    else list(name = nm, type = if (is.integer(d[[nm]])) "integer" else "float")
  })
  write_json(list(rows = nrow(d), columns = schema), file.path(outdir, "data", paste0(name, ".schema.json")),
             auto_unbox = TRUE, pretty = TRUE, digits = NA)
}
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
vc_list <- function(m) {
  vc <- as.data.frame(VarCorr(m))
  lapply(seq_len(nrow(vc)), function(i) list(grp = vc$grp[i], var1 = if (is.na(vc$var1[i])) NULL else vc$var1[i],
                                             var2 = if (is.na(vc$var2[i])) NULL else vc$var2[i],
                                             vcov = vc$vcov[i], sdcor = vc$sdcor[i]))
}
ranef_list <- function(m) {
  re <- as.data.frame(ranef(m, condVar = TRUE))
  lapply(seq_len(nrow(re)), function(i) list(group = as.character(re$grpvar[i]), term = as.character(re$term[i]),
                                             level = as.character(re$grp[i]), value = re$condval[i], condsd = re$condsd[i]))
}
rnd <- function(x) round(x, 6)
lab <- function(prefix, i) paste0(prefix, i)   # "g1","g2",...,"g10": byte order != numeric order
rmvn <- function(n, Sigma) matrix(rnorm(n * ncol(Sigma)), n) %*% chol(Sigma)
# inverse Gaussian draws (Michael, Schucany & Haas 1976) from base R's RNG only
rinvgauss_base <- function(n, mu, lambda) {
  nu <- rnorm(n); y <- nu^2
  x <- mu + mu^2 * y / (2 * lambda) - mu / (2 * lambda) * sqrt(4 * mu * lambda * y + mu^2 * y^2)
  ifelse(runif(n) <= mu / (mu + x), x, mu^2 / x)
}

# ---- simulated data sets (one seed each) ----------------------------------------------------
datasets <- list(); exact_cols <- list()

# binary_crossed: 300 subjects x 24 items, fully crossed, binary response
set.seed(20240301)
ns <- 300; ni <- 24
d <- expand.grid(item = seq_len(ni), subj = seq_len(ns))
us <- rnorm(ns, 0, 1.0); ui <- rnorm(ni, 0, 0.6); x <- rnd(rnorm(nrow(d)))
eta <- -0.3 + 0.8 * x + us[d$subj] + ui[d$item]
datasets$binary_crossed <- prep(data.frame(y = as.integer(rbinom(nrow(d), 1, plogis(eta))), x = x,
                                           subj = lab("s", d$subj), item = lab("i", d$item),
                                           stringsAsFactors = FALSE))

# poisson_nested: 20 regions, 4-8 sites each (labels s1..s8 re-used in every region),
# 5-15 rows per site, exposure in (0.5, 10) (3 decimals), logexp = log(exposure) exactly
set.seed(20240302)
rows <- list()
for (r in 1:20) {
  ur <- rnorm(1, 0, 0.5)
  for (s in seq_len(sample(4:8, 1))) {
    us <- rnorm(1, 0, 0.3); nn <- sample(5:15, 1)
    x <- rnd(rnorm(nn)); expo <- round(runif(nn, 0.5, 10), 3)
    mu <- expo * exp(0.2 + 0.5 * x + ur + us)
    rows[[length(rows) + 1]] <- data.frame(count = as.integer(rpois(nn, mu)), x = x, exposure = expo,
                                           region = lab("r", r), site = lab("s", s), stringsAsFactors = FALSE)
  }
}
d <- do.call(rbind, rows); d$logexp <- log(d$exposure)
datasets$poisson_nested <- prep(d); exact_cols$poisson_nested <- "logexp"

# gamma: 100 groups, 4-12 rows, y ~ Gamma(shape 5, mean exp(0.5 + 0.4 x + u)), u ~ N(0, 0.5^2)
set.seed(20240303)
ng <- 100; sz <- sample(4:12, ng, replace = TRUE); gi <- rep(seq_len(ng), sz); n <- length(gi)
u <- rnorm(ng, 0, 0.5); x <- rnd(rnorm(n)); mu <- exp(0.5 + 0.4 * x + u[gi])
datasets$gamma <- prep(data.frame(y = rnd(rgamma(n, shape = 5, scale = mu / 5)), x = x, g = lab("g", gi),
                                  stringsAsFactors = FALSE))
stopifnot(all(datasets$gamma$y > 0))

# invgauss: 80 groups, 4-11 rows, y ~ IG(mean exp(0.3 + 0.3 x + u), shape lambda = 4), u ~ N(0, 0.4^2)
set.seed(20240304)
ng <- 80; sz <- sample(4:11, ng, replace = TRUE); gi <- rep(seq_len(ng), sz); n <- length(gi)
u <- rnorm(ng, 0, 0.4); x <- rnd(rnorm(n)); mu <- exp(0.3 + 0.3 * x + u[gi])
datasets$invgauss <- prep(data.frame(y = rnd(rinvgauss_base(n, mu, 4)), x = x, g = lab("g", gi),
                                     stringsAsFactors = FALSE))
stopifnot(all(datasets$invgauss$y > 0))

# binomial_slopes: 80 groups, 4-12 rows, trials 5-20, (1 + x | g) with sds 0.8, 0.4, corr 0.3
set.seed(20240305)
ng <- 80; sz <- sample(4:12, ng, replace = TRUE); gi <- rep(seq_len(ng), sz); n <- length(gi)
S <- diag(c(0.8, 0.4)) %*% matrix(c(1, 0.3, 0.3, 1), 2) %*% diag(c(0.8, 0.4))
b <- rmvn(ng, S); x <- rnd(rnorm(n)); trials <- sample(5:20, n, replace = TRUE)
succ <- rbinom(n, trials, plogis(-0.5 + 0.7 * x + b[gi, 1] + b[gi, 2] * x))
datasets$binomial_slopes <- prep(data.frame(succ = as.integer(succ), fail = as.integer(trials - succ),
                                            trials = as.integer(trials), prop = succ / trials, x = x,
                                            g = lab("g", gi), stringsAsFactors = FALSE))
exact_cols$binomial_slopes <- "prop"

# probit_binary: 150 groups, 5-15 rows, binary response, probit link
set.seed(20240306)
ng <- 150; sz <- sample(5:15, ng, replace = TRUE); gi <- rep(seq_len(ng), sz); n <- length(gi)
u <- rnorm(ng, 0, 0.7); x <- rnd(rnorm(n))
datasets$probit_binary <- prep(data.frame(y = as.integer(rbinom(n, 1, pnorm(0.2 + 0.5 * x + u[gi]))), x = x,
                                          g = lab("g", gi), stringsAsFactors = FALSE))

# poisson_agq: 60 groups, 3-10 rows, counts
set.seed(20240307)
ng <- 60; sz <- sample(3:10, ng, replace = TRUE); gi <- rep(seq_len(ng), sz); n <- length(gi)
u <- rnorm(ng, 0, 0.7); x <- rnd(rnorm(n))
datasets$poisson_agq <- prep(data.frame(count = as.integer(rpois(n, exp(0.5 + 0.3 * x + u[gi]))), x = x,
                                        g = lab("g", gi), stringsAsFactors = FALSE))

# binary_agq: 100 groups, 3-8 rows (small clusters, where AGQ and Laplace differ), sd 1.2
set.seed(20240308)
ng <- 100; sz <- sample(3:8, ng, replace = TRUE); gi <- rep(seq_len(ng), sz); n <- length(gi)
u <- rnorm(ng, 0, 1.2); x <- rnd(rnorm(n))
datasets$binary_agq <- prep(data.frame(y = as.integer(rbinom(n, 1, plogis(0.3 + 0.6 * x + u[gi]))), x = x,
                                       g = lab("g", gi), stringsAsFactors = FALSE))

# cbpp: lme4's data set as in /work/shared/reference (copied there, GPL >= 2)
datasets$cbpp <- within(prep(cbpp), {failures <- size - incidence; prop <- incidence / size})

# ---- cases ----------------------------------------------------------------------------------
cases <- list(
  list(id = "binary_crossed", data = "binary_crossed", formula = "y ~ x + (1 | subj) + (1 | item)", family = "binomial", link = "logit"),
  list(id = "binary_crossed_nagq0", data = "binary_crossed", formula = "y ~ x + (1 | subj) + (1 | item)", family = "binomial", link = "logit", nAGQ = 0),
  list(id = "poisson_nested_offset", data = "poisson_nested", formula = "count ~ x + offset(log(exposure)) + (1 | region/site)", family = "poisson", link = "log"),
  list(id = "poisson_offset_arg", data = "poisson_nested", formula = "count ~ x + (1 | region/site)", family = "poisson", link = "log", offset = "logexp"),
  list(id = "gamma_log", data = "gamma", formula = "y ~ x + (1 | g)", family = "Gamma", link = "log"),
  list(id = "gamma_inverse", data = "gamma", formula = "y ~ x + (1 | g)", family = "Gamma", link = "inverse"),
  list(id = "inverse_gaussian_log", data = "invgauss", formula = "y ~ x + (1 | g)", family = "inverse.gaussian", link = "log"),
  list(id = "binomial_slopes", data = "binomial_slopes", formula = "cbind(succ, fail) ~ x + (1 + x | g)", family = "binomial", link = "logit"),
  list(id = "binomial_prop_weights", data = "binomial_slopes", formula = "prop ~ x + (1 + x | g)", family = "binomial", link = "logit", weights = "trials"),
  list(id = "probit_binary", data = "probit_binary", formula = "y ~ x + (1 | g)", family = "binomial", link = "probit"),
  list(id = "poisson_agq", data = "poisson_agq", formula = "count ~ x + (1 | g)", family = "poisson", link = "log", nAGQ = 9),
  list(id = "binary_agq", data = "binary_agq", formula = "y ~ x + (1 | g)", family = "binomial", link = "logit", nAGQ = 5),
  list(id = "binary_agq15", data = "binary_agq", formula = "y ~ x + (1 | g)", family = "binomial", link = "logit", nAGQ = 15),
  list(id = "cbpp_nagq0", data = "cbpp", formula = "cbind(incidence, size - incidence) ~ period + (1 | herd)", family = "binomial", link = "logit", nAGQ = 0)
)

dispersion_notes <- list(
  Gamma = paste(
    "Gamma has a dispersion parameter. sigma = lme4's sigma(m) = sqrt(pwrss / n) with",
    "pwrss = sum(w (y - mu)^2 / mu^2) + |u|^2 (Pearson X^2 plus the squared spherical random effects,",
    "divided by n, not n - p). The Laplace objective uses R's Gamma()$aic, whose dispersion is",
    "disp = sum(dev.resids) / sum(w) and which adds +2; df counts the dispersion (p + ntheta + 1).",
    "vcov_beta comes from the finite-difference Hessian of that objective (not sigma^2 * RX-based)."),
  inverse.gaussian = paste(
    "inverse.gaussian has a dispersion parameter. sigma = lme4's sigma(m) = sqrt(pwrss / n) with",
    "pwrss = sum(w (y - mu)^2 / mu^3) + |u|^2. The Laplace objective uses R's inverse.gaussian()$aic:",
    "sum(w) (1 + log(2 pi disp)) + 3 sum(w log y) + 2 with disp = sum(dev.resids) / sum(w);",
    "df counts the dispersion (p + ntheta + 1). vcov_beta comes from the finite-difference Hessian."))

fam_obj <- function(family, link) switch(family, binomial = binomial(link = link), poisson = poisson(link = link),
                                         Gamma = Gamma(link = link), inverse.gaussian = inverse.gaussian(link = link))

used <- unique(sapply(cases, `[[`, "data"))
shared_data <- "/work/shared/reference/data"
for (nm in used) {
  if (nm == "cbpp") {
    # copied unchanged from the shared reference set (same data, same column order)
    for (ext in c(".csv", ".schema.json"))
      stopifnot(file.copy(file.path(shared_data, paste0("cbpp", ext)), file.path(outdir, "data", paste0("cbpp", ext)),
                          overwrite = TRUE))
    Sys.chmod(file.path(outdir, "data", paste0("cbpp", c(".csv", ".schema.json"))), mode = "0644")
  } else {
    write_data(nm, datasets[[nm]], exact = if (is.null(exact_cols[[nm]])) character(0) else exact_cols[[nm]])
  }
  datasets[[nm]] <- read_back(nm, datasets[[nm]])
}

tight_ctrl <- glmerControl(tolPwrss = 1e-13, optimizer = "bobyqa", optCtrl = list(rhoend = 1e-10, maxfun = 1e5))
tight_ctrl_text <- 'glmerControl(tolPwrss = 1e-13, optimizer = "bobyqa", optCtrl = list(rhoend = 1e-10, maxfun = 1e5))'
dropped <- list()
for (cs in cases) {
  d <- datasets[[cs$data]]; f <- as.formula(cs$formula)
  nAGQ <- if (is.null(cs$nAGQ)) 1 else cs$nAGQ
  fam <- fam_obj(cs$family, cs$link)
  # the data frame is bound to its data set's name so that summary()'s "Data:" line shows it
  env <- new.env(); assign(cs$data, d, envir = env)
  call <- substitute(glmer(F, data = D, family = FAM, nAGQ = NAGQ),
                     list(F = f, D = as.name(cs$data), FAM = fam, NAGQ = nAGQ))
  # weights / offset are evaluated in the data frame: pass column names as symbols
  if (!is.null(cs$weights)) call$weights <- as.name(cs$weights)
  if (!is.null(cs$offset)) call$offset <- as.name(cs$offset)
  warns <- character(0)
  t0 <- proc.time()[["elapsed"]]
  m <- tryCatch(withCallingHandlers(eval(call, env),
                                    warning = function(w) { warns <<- c(warns, conditionMessage(w)); invokeRestart("muffleWarning") }),
                error = function(e) e)
  secs <- proc.time()[["elapsed"]] - t0
  if (inherits(m, "error")) {
    dropped[[cs$id]] <- conditionMessage(m)
    cat(sprintf("%-24s FAILED: %s\n", cs$id, conditionMessage(m)))
    next
  }
  # lme4 reports the AGQ (nAGQ > 1) log-likelihood without the saturated part (it uses the
  # deviance residuals); add it back (exactly as /work/shared/reference/generate_lme4.R) so
  # that logLik is the full log-likelihood, on the same scale as the Laplace fits.
  sat <- 0
  if (nAGQ > 1) {
    yy <- m@resp$y; ww <- m@resp$weights
    sat <- switch(cs$family, binomial = sum(dbinom(round(yy * ww), round(ww), yy, log = TRUE)),
                  poisson = sum(dpois(yy, yy, log = TRUE)), 0)
  }
  hess <- m@optinfo$derivs$Hessian
  # lme4 stops PIRLS at a relative change of the penalized deviance < tolPwrss = 1e-7, and its
  # objective uses log|L|^2 at the working weights of the last-but-one PIRLS iterate, so the
  # reported logLik is off the exactly evaluated Laplace/AGQ value by up to ~1e-2 (README).
  # (1) the same objective at lme4's estimates with PIRLS converged to 1e-13:
  call_df <- call; call_df$devFunOnly <- TRUE; call_df$control <- glmerControl(tolPwrss = 1e-13)
  df_tight <- tryCatch(suppressWarnings(eval(call_df, env)), error = function(e) NULL)
  pars <- if (nAGQ == 0) getME(m, "theta") else c(getME(m, "theta"), fixef(m))
  ll_conv <- if (is.null(df_tight)) NULL else -df_tight(pars) / 2 + sat
  # (2) a refit with PIRLS to 1e-13 and bobyqa to rhoend 1e-10 in both stages (a less noisy optimum)
  call_t <- call; call_t$control <- tight_ctrl
  mt <- tryCatch(suppressWarnings(eval(call_t, env)), error = function(e) e)
  tight <- if (inherits(mt, "error")) list(error = conditionMessage(mt)) else list(
    control = tight_ctrl_text,
    objective = deviance(mt), logLik = as.numeric(logLik(mt)) + sat, logLik_lme4 = as.numeric(logLik(mt)),
    theta = unname(getME(mt, "theta")), beta = unname(fixef(mt)),
    beta_se = unname(sqrt(diag(as.matrix(vcov(mt))))), vcov_beta = unname(as.matrix(vcov(mt))),
    sigma = sigma(mt), lme4_messages = mt@optinfo$conv$lme4$messages)
  res <- list(
    id = cs$id, data = cs$data, formula = cs$formula, family = cs$family, link = cs$link,
    REML = FALSE, nAGQ = nAGQ, weights = cs$weights, offset = cs$offset,
    lme4_version = as.character(packageVersion("lme4")), lme4_seconds = secs,
    nobs = nobs(m), ngrps = as.list(ngrps(m)),
    objective = deviance(m), deviance_ml = deviance(m),
    logLik = as.numeric(logLik(m)) + sat, logLik_lme4 = as.numeric(logLik(m)), df = attr(logLik(m), "df"),
    AIC = AIC(m) - 2 * sat, BIC = BIC(m) - 2 * sat,
    theta = unname(getME(m, "theta")), theta_names = names(getME(m, "theta")),
    beta = unname(fixef(m)), beta_names = names(fixef(m)),
    beta_se = unname(sqrt(diag(as.matrix(vcov(m))))),
    vcov_beta = unname(as.matrix(vcov(m))),
    vcov_source = if (!is.null(hess) && nrow(hess) > length(getME(m, "theta"))) "hessian" else "RX",
    vcov_beta_rx = unname(as.matrix(suppressWarnings(vcov(m, use.hessian = FALSE)))),
    sigma = sigma(m), singular = isSingular(m),
    varcorr = vc_list(m), ranef = ranef_list(m),
    fitted_head = unname(head(fitted(m), 50)),
    lme4_messages = m@optinfo$conv$lme4$messages,
    fit_warnings = if (length(warns)) warns else NULL,
    dispersion_note = dispersion_notes[[cs$family]],
    # lme4's internals at the optimum (m@devcomp$cmp; aic = the family aic term of the Laplace
    # objective, m@resp$aic()); -2 logLik_lme4 = aic + ldL2 + ussq for Laplace and nAGQ = 0 fits
    devcomp = list(ldL2 = m@devcomp$cmp[["ldL2"]], ldRX2 = m@devcomp$cmp[["ldRX2"]], wrss = m@devcomp$cmp[["wrss"]],
                   ussq = m@devcomp$cmp[["ussq"]], pwrss = m@devcomp$cmp[["pwrss"]], drsum = m@devcomp$cmp[["drsum"]],
                   aic = m@resp$aic(), saturated_loglik = sat),
    # finite-difference Hessian of the objective over c(theta, beta) (null for nAGQ = 0)
    hessian = if (is.null(hess)) NULL else unname(hess),
    logLik_pirls_converged = ll_conv,
    tight_refit = tight
  )
  write_json(res, file.path(outdir, "lme4", paste0(cs$id, ".json")), auto_unbox = TRUE, pretty = TRUE, digits = NA, null = "null")
  # lme4's printed summary
  writeLines(capture.output(print(summary(m))), file.path(outdir, "summaries", paste0(cs$id, ".txt")))
  msg <- if (is.null(res$lme4_messages)) "-" else paste(res$lme4_messages, collapse = " | ")
  cat(sprintf("%-24s n=%5d nAGQ=%2d %6.2fs dev=%.6f logLik=%.6f singular=%s messages=%s warnings=%s | converged-PIRLS logLik=%.6f tight refit logLik=%.6f\n",
              cs$id, res$nobs, nAGQ, secs, res$objective, res$logLik, res$singular, msg,
              if (length(warns)) paste(warns, collapse = " | ") else "-",
              if (is.null(ll_conv)) NA else ll_conv, if (is.null(tight$logLik)) NA else tight$logLik))
}
if (length(dropped)) { cat("dropped cases:\n"); print(dropped) }
