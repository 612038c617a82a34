# Between/within decomposition references for glmm_sparse's decomposition.py: ICC (adjusted,
# conditional, by grouping factor), R2 marginal and conditional (Nakagawa, Johnson & Schielzeth
# 2017; random slopes as Johnson 2014), the design effect and the shrinkage table of
# random-intercept terms, on lme4 1.1-31 fits.
#
# The R package `performance` is NOT installed here, so these numbers are computed in this
# script by the published formulas from lme4's VarCorr(), fixef(), getME(m, "mmList"),
# model.matrix(), ranef(), sigma() (and, for GLMMs, the working weights and residuals):
#   var_fixed    = var(X beta) (R's var, denominator n - 1, as performance::r2_nakagawa)
#   var_random   = sum over terms of mean_i x_i' Sigma_t x_i (Johnson 2014; sigma_u^2 for (1 | g))
#   var_residual = sigma^2 (LMM); pi^2/3 (logit), 1 (probit), pi^2/6 (cloglog);
#                  Poisson log: log(1 + 1/lambda) (Nakagawa et al. 2017, lognormal
#                  approximation) with lambda = exp(beta0 + var_random0 / 2) of the NULL model,
#                  as insight computes it (insight:::.variance_distributional: null_fixef and
#                  revar_null of insight::null_model): the model refitted with the same random
#                  terms, offset, weights and control and an intercept-only fixed part;
#                  beta0 is its intercept, var_random0 its Johnson variance (for the random
#                  intercepts here, its sigma_g^2; insight keeps only the rows of Sigma named
#                  by columns of the null model's X, which differs for random slopes)
#   ICC adjusted = var_random / (var_random + var_residual)
#   ICC conditional = var_random / (var_fixed + var_random + var_residual)
#   R2 marginal = var_fixed / total, R2 conditional = (var_fixed + var_random) / total
#   ICC of a grouping factor (intercept-only models) = sigma_g^2 / (var_random + var_residual)
#   design effect = 1 + (nobs / levels - 1) * ICC of that factor
#   shrinkage (random-intercept term g): n_j (sum of prior weights, or of working weights for a
#   GLMM), mean_j = (weighted) mean of the partial residual y - X beta - offset - sum_{other
#   terms} Z b (for a GLMM: the working residual (y - mu) / mu_eta + b_g), the factor
#   n_j / (n_j + sigma^2 / sigma_g^2) (sigma = 1 for binomial and Poisson), and condval.
#
# Usage (from this folder): Rscript generate_decomposition.R .
# Debian packages: r-base-core r-cran-lme4 r-cran-jsonlite
suppressMessages({library(lme4); library(jsonlite)})
out <- commandArgs(TRUE)[1]; dir.create(out, showWarnings = FALSE, recursive = TRUE)
ref <- normalizePath(file.path(dirname(sub("--file=", "", grep("--file=", commandArgs(FALSE), value = TRUE))), ".."))

read_ref <- function(dir, name) {
  schema <- fromJSON(file.path(ref, dir, "data", paste0(name, ".schema.json")))$columns
  d <- read.csv(file.path(ref, dir, "data", paste0(name, ".csv")), stringsAsFactors = FALSE,
                colClasses = setNames(ifelse(schema$type == "factor", "character", NA), schema$name))
  for (i in which(schema$type == "factor")) d[[schema$name[i]]] <- factor(d[[schema$name[i]]], levels = schema$levels[[i]])
  d
}

# the null model as insight::null_model builds it: response ~ the random terms, with the
# offset(s) of the formula kept, and the call's weights / offset / control (update keeps them)
null_model <- function(m) {
  f <- formula(m)
  tt <- terms(f)
  offsets <- if (is.null(attr(tt, "offset"))) character(0) else
    sapply(attr(tt, "variables")[attr(tt, "offset") + 1], deparse1)
  re <- paste0("(", sapply(findbars(f), deparse1), ")")
  update(m, reformulate(c(offsets, re), response = f[[2]]))
}

residual_variance <- function(m, var_random) {
  if (!isGLMM(m)) return(list(value = sigma(m)^2, method = "sigma^2"))
  fam <- family(m)
  key <- paste(fam$family, fam$link)
  switch(key,
         "binomial logit" = list(value = pi^2 / 3, method = "logit: pi^2/3"),
         "binomial probit" = list(value = 1, method = "probit: 1"),
         "binomial cloglog" = list(value = pi^2 / 6, method = "cloglog: pi^2/6"),
         "poisson log" = {
           m0 <- null_model(m)
           var0 <- sum(mapply(function(S, Xr) mean(rowSums((Xr %*% S) * Xr)), VarCorr(m0), getME(m0, "mmList")))
           beta0 <- unname(fixef(m0)[1])
           lambda <- exp(beta0 + var0 / 2)
           list(value = log1p(1 / lambda), method = "poisson log: log(1 + 1/lambda), null model",
                lambda = lambda, null_intercept = beta0, null_var_random = var0,
                null_objective = -2 * as.numeric(logLik(m0)))
         },
         stop("no latent residual variance for ", key))
}

decompose <- function(m) {
  vc <- VarCorr(m); mm <- getME(m, "mmList")
  scale2 <- if (isGLMM(m)) 1 else sigma(m)^2
  per_term <- mapply(function(S, Xr) mean(rowSums((Xr %*% S) * Xr)), vc, mm)
  var_random <- sum(per_term)
  var_fixed <- var(as.vector(model.matrix(m) %*% fixef(m)))
  res <- residual_variance(m, var_random)
  total <- var_fixed + var_random + res$value
  out <- list(var_fixed = var_fixed, var_random = var_random, var_residual = res$value,
              residual_method = res$method,
              icc_adjusted = var_random / (var_random + res$value),
              icc_conditional = var_random / total,
              r2_marginal = var_fixed / total, r2_conditional = (var_fixed + var_random) / total)
  for (k in c("lambda", "null_intercept", "null_var_random", "null_objective")) out[[k]] <- res[[k]]
  intercept_only <- all(sapply(mm, function(Xr) identical(colnames(Xr), "(Intercept)")))
  if (intercept_only) {
    groups <- names(vc)
    flist <- getME(m, "flist")
    sizes <- sapply(names(mm), function(nm) { f <- sub("^1 \\| ", "", nm); nobs(m) / nlevels(flist[[f]]) })
    icc_g <- per_term / (var_random + res$value)
    out$by_group <- list(group = groups, variance = unname(per_term), icc = unname(icc_g),
                         mean_size = unname(sizes), design_effect = unname(1 + (sizes - 1) * icc_g))
  }
  out
}

shrinkage <- function(m, term) {
  re <- ranef(m)[[term]][, "(Intercept)"]
  g <- getME(m, "flist")[[term]]
  b_rows <- re[as.integer(g)]
  if (isGLMM(m)) {
    w <- m@resp$sqrtWrkWt()^2
    stopifnot(length(getME(m, "flist")) == 1)  # partial residual below: one term only
    partial <- residuals(m, type = "working") + b_rows
    s2 <- 1
  } else {
    w <- if (is.null(m@frame$`(weights)`)) rep(1, nobs(m)) else m@frame$`(weights)`
    partial <- residuals(m) + b_rows
    s2 <- sigma(m)^2
  }
  vg <- as.data.frame(VarCorr(m))
  su2 <- vg$vcov[vg$grp == term & is.na(vg$var2)]
  n_eff <- as.vector(tapply(w, g, sum))
  mean_j <- as.vector(tapply(w * partial, g, sum)) / n_eff
  list(term = term, grp = levels(g), n = as.vector(table(g)), n_eff = n_eff, mean_resid = mean_j,
       condval = re, factor = n_eff / (n_eff + s2 / su2))
}
# glmer's default PIRLS tolerance (relative pdev change 1e-7) moves its Laplace optimum by
# 1e-4 to 1e-3 relative in theta on these data (../glmm/README.md, "PIRLS noise"); the
# GLMMs are fitted with PIRLS converged and a tight optimizer, as that README's tight_refit
tight <- glmerControl(tolPwrss = 1e-13, optimizer = "bobyqa", optCtrl = list(rhoend = 1e-10, maxfun = 1e5))

fit <- function(id, dir, data, formula, family = NULL, link = NULL, weights = NULL, shrink = character(0)) {
  d <- read_ref(dir, data)
  if (!is.null(weights)) d$.w <- d[[weights]]
  m <- if (is.null(family)) {
    if (is.null(weights)) lmer(as.formula(formula), d) else lmer(as.formula(formula), d, weights = .w)
  } else glmer(as.formula(formula), d, family = do.call(family, list(link = link)), control = tight)
  res <- c(list(id = id, data = data, data_dir = dir, formula = formula, REML = !isGLMM(m) && isREML(m),
                family = if (is.null(family)) "gaussian" else family, link = if (is.null(link)) "identity" else link,
                weights = weights, nobs = nobs(m)),
           decompose(m))
  res$objective <- -2 * as.numeric(logLik(m))  # -2 (REML) log-likelihood
  res$shrinkage <- lapply(shrink, function(t) shrinkage(m, t))
  res
}

cases <- list(
  fit("sleep_intercept", ".", "sleepstudy", "Reaction ~ Days + (1 | Subject)", shrink = "Subject"),
  fit("sleep_slope", ".", "sleepstudy", "Reaction ~ Days + (Days | Subject)"),
  fit("dyestuff", ".", "dyestuff", "Yield ~ 1 + (1 | Batch)", shrink = "Batch"),
  fit("pastes_nested", ".", "pastes", "strength ~ 1 + (1 | batch/cask)", shrink = c("cask:batch", "batch")),
  fit("penicillin_crossed", ".", "penicillin", "diameter ~ 1 + (1 | plate) + (1 | sample)", shrink = c("plate", "sample")),
  fit("weighted", "extra", "weighted", "y ~ x + (1 | g)", weights = "w", shrink = "g"),
  fit("cbpp_logit", "glmm", "cbpp", "cbind(incidence, size - incidence) ~ period + (1 | herd)", family = "binomial", link = "logit", shrink = "herd"),
  fit("probit_binary", "glmm", "probit_binary", "y ~ x + (1 | g)", family = "binomial", link = "probit", shrink = "g"),
  fit("binary_cloglog", "glmm", "binary_agq", "y ~ x + (1 | g)", family = "binomial", link = "cloglog"),
  fit("poisson_log", "glmm", "poisson_agq", "count ~ x + (1 | g)", family = "poisson", link = "log", shrink = "g"),
  # the same model with x shifted: the same lambda (the null model has no x)
  fit("poisson_log_shifted", "glmm", "poisson_agq", "count ~ I(x + 5) + (1 | g)", family = "poisson", link = "log"),
  # an offset in the formula: kept in the null model (lambda is the rate at offset 0)
  fit("cbpp_poisson_offset", "glmm", "cbpp", "incidence ~ period + offset(log(size)) + (1 | herd)", family = "poisson", link = "log")
)
write_json(list(made_by = "generate_decomposition.R", R = R.version.string,
                lme4 = as.character(packageVersion("lme4")), cases = cases),
           file.path(out, "decomposition.json"), auto_unbox = TRUE, pretty = TRUE, digits = NA, null = "null")
