# Profile-likelihood intervals (lme4 1.1-31 profile/confint, oldNames = FALSE) beyond
# pastes_profile.json: a correlated random slope, an ML fit, a variance on the boundary,
# crossed terms, a 90% level, and the profile points themselves (zeta at given values).
# Usage: Rscript generate_profile.R OUTDIR
# Debian packages: r-base-core r-cran-lme4 r-cran-jsonlite
suppressMessages({library(lme4); library(jsonlite)})
out <- commandArgs(TRUE)[1]; dir.create(out, showWarnings = FALSE, recursive = TRUE)
py_levels <- function(f) {
  lv <- levels(f)
  if (all(grepl("^-?[0-9]+$", lv))) lv[order(as.numeric(lv))] else sort(lv, method = "radix")
}
prep <- function(d) { d <- as.data.frame(d)
  for (nm in names(d)) if (is.factor(d[[nm]])) d[[nm]] <- factor(as.character(d[[nm]]), levels = py_levels(d[[nm]]))
  d }
ci <- function(x) list(names = rownames(x), lower = unname(x[, 1]), upper = unname(x[, 2]))
points <- function(pr) { d <- as.data.frame(pr)
  list(parameter = as.character(d$.par), value = mapply(function(i, p) d[i, p], seq_len(nrow(d)), as.character(d$.par)),
       zeta = d$.zeta) }
case <- function(data, formula, REML, level = 0.95, keep_points = FALSE) {
  m <- lmer(as.formula(formula), prep(data), REML = REML)
  pr <- profile(m, signames = FALSE)
  res <- list(formula = formula, REML = REML, level = level,
              profile_ci = ci(confint(pr, level = level)),
              wald_ci = ci(confint(m, method = "Wald", level = level, oldNames = FALSE)))
  if (keep_points) res$points <- points(pr)
  res
}
res <- list(
  sleepstudy_reml = c(list(data = "sleepstudy"), case(sleepstudy, "Reaction ~ Days + (Days | Subject)", TRUE, keep_points = TRUE)),
  sleepstudy_ml_90 = c(list(data = "sleepstudy"), case(sleepstudy, "Reaction ~ Days + (Days | Subject)", FALSE, level = 0.9)),
  dyestuff2_reml = c(list(data = "dyestuff2"), case(Dyestuff2, "Yield ~ 1 + (1 | Batch)", TRUE, keep_points = TRUE)),
  penicillin_reml = c(list(data = "penicillin"), case(Penicillin, "diameter ~ 1 + (1 | plate) + (1 | sample)", TRUE)))
write_json(res, file.path(out, "profile_more.json"), auto_unbox = TRUE, pretty = TRUE, digits = NA)
cat("done\n")
