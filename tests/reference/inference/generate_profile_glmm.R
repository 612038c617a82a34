# Profile-likelihood intervals of GLMMs (lme4 1.1-31 profile / confint, oldNames = FALSE)
# and of a known-variance LMM (metafor 3.8-1 rma, profile-likelihood CI of tau^2), for
# tests/test_profile.py.
# Usage: Rscript generate_profile_glmm.R OUTDIR   (data: ../data, ../glmm/data with schemas)
# Debian packages: r-base-core r-cran-lme4 r-cran-metafor r-cran-jsonlite
#
# glmer fits are converged tightly (../glmm/README.md, "PIRLS noise"): tolPwrss = 1e-13 and
# bobyqa to rhoend = 1e-12 in stage 2. profile() reuses the fit's optimizer ("bobyqa") and
# its optCtrl at every profile point, but not its tolPwrss: getME(m, "devfun") builds the
# deviance with mkGlmerDevfun's default glmerControl(), tolPwrss = 1e-7 (recorded as
# devfun_tolPwrss). Each case is therefore profiled twice: as lme4 ships ("profile_ci",
# "points") and with mkGlmerDevfun's default control set to tolPwrss = 1e-13 in lme4's
# namespace for the call ("tight_profile_ci", "tight_points"; devfun_tolPwrss_tight).
suppressMessages({library(lme4); library(metafor); library(jsonlite)})
out <- commandArgs(TRUE)[1]; dir.create(out, showWarnings = FALSE, recursive = TRUE)
here <- dirname(sub("--file=", "", grep("--file=", commandArgs(FALSE), value = TRUE)))
load <- function(name, base) {  # factors in the schema's level order, as tests/refdata.py
  schema <- fromJSON(file.path(here, base, paste0(name, ".schema.json")), simplifyDataFrame = FALSE)
  d <- read.csv(file.path(here, base, paste0(name, ".csv")), colClasses = "character")
  for (col in schema$columns) d[[col$name]] <- if (col$type == "factor")
    factor(d[[col$name]], levels = unlist(col$levels)) else as.numeric(d[[col$name]])
  d
}
tight <- glmerControl(tolPwrss = 1e-13, optimizer = "bobyqa", optCtrl = list(rhoend = 1e-12, maxfun = 1e5))
tight_text <- 'glmerControl(tolPwrss = 1e-13, optimizer = "bobyqa", optCtrl = list(rhoend = 1e-12, maxfun = 1e5))'
with_tight_pirls <- function(f) {  # mkGlmerDevfun's default control, tolPwrss = 1e-13, for f()
  ns <- asNamespace("lme4"); orig <- get("mkGlmerDevfun", ns); tightened <- orig
  formals(tightened)$control <- glmerControl(tolPwrss = 1e-13)
  unlockBinding("mkGlmerDevfun", ns); assign("mkGlmerDevfun", tightened, envir = ns)
  on.exit({assign("mkGlmerDevfun", orig, envir = ns); lockBinding("mkGlmerDevfun", ns)})
  f()
}
ci <- function(x) list(names = rownames(x), lower = unname(x[, 1]), upper = unname(x[, 2]))
points <- function(pr) { d <- as.data.frame(pr)
  list(parameter = as.character(d$.par), value = mapply(function(i, p) d[i, p], seq_len(nrow(d)), as.character(d$.par)),
       zeta = d$.zeta) }
glmm_case <- function(data, base, formula, family, nAGQ, which = NULL) {
  d <- load(data, base)
  m <- glmer(as.formula(formula), d, family = family, nAGQ = nAGQ, control = tight)
  t0 <- proc.time()[["elapsed"]]
  pr <- profile(m, which = which, signames = FALSE)
  secs <- proc.time()[["elapsed"]] - t0
  list(data = data, base = base, formula = formula, family = family, nAGQ = nAGQ, control = tight_text,
       devfun_tolPwrss = environment(getME(m, "devfun"))$tolPwrss,
       minus2loglik = -2 * as.numeric(logLik(m)), theta = unname(getME(m, "theta")), beta = unname(fixef(m)),
       profile_ci = ci(confint(pr, level = 0.95)), profile_ci_90 = ci(confint(pr, level = 0.9)),
       points = points(pr), profile_seconds = secs,
       profile_warnings = if (length(w <- names(warnings()))) w else NULL,
       tight = with_tight_pirls(function() {
         pt <- profile(m, which = which, signames = FALSE)
         list(devfun_tolPwrss = environment(getME(m, "devfun"))$tolPwrss,
              profile_ci = ci(confint(pt, level = 0.95)), points = points(pt))
       }))
}
res <- list(
  cbpp_binomial = glmm_case("cbpp", "../data", "cbind(incidence, size - incidence) ~ period + (1 | herd)", "binomial", 1L),
  poisson_agq = glmm_case("poisson_agq", "../glmm/data", "count ~ x + (1 | g)", "poisson", 9L),
  poisson_agq_laplace = glmm_case("poisson_agq", "../glmm/data", "count ~ x + (1 | g)", "poisson", 1L),
  # a correlated random slope: the variance parameters only ("theta_")
  binomial_slopes = glmm_case("binomial_slopes", "../glmm/data", "cbind(succ, fail) ~ x + (1 + x | g)", "binomial", 1L, which = "theta_"))
# Known sampling variances (lmer(..., sigma = 1, weights = 1/vi)): rma's ML fit and its
# profile-likelihood interval of tau^2 (type = "PL": the ML log-likelihood with beta
# re-estimated at each tau^2), roots found to 1e-12.
rd <- dat.raudenbush1985
f <- rma(yi, vi, mods = ~ weeks, data = rd, method = "ML", control = list(threshold = 1e-14, maxiter = 10000))
pl <- confint(f, type = "PL", control = list(tol = 1e-12))
res$raudenbush_ml <- list(data = "raudenbush1985.csv", method = "ML", metafor = as.character(packageVersion("metafor")),
  model = "yi ~ weeks + (1 | study), residual variances vi known (sigma = 1, weights 1/vi)",
  tau2 = f$tau2, beta = unname(as.numeric(f$beta)), loglik = as.numeric(logLik(f)),
  tau2_ci = unname(pl$random["tau^2", 2:3]), tau_ci = unname(pl$random["tau", 2:3]))
write_json(res, file.path(out, "profile_glmm.json"), auto_unbox = TRUE, pretty = TRUE, digits = NA, null = "null")
cat("done\n")
