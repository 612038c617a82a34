# Likelihood-ratio tests (lme4 1.1-31 anova.merMod), chi-bar-square p-values, exact F tests
# and ANOVA estimators for tests/test_lrt.py and tests/test_variance_tests.py.
# Usage (from this folder): Rscript generate_lrt.R ../data lrt_references.json
# Reads the project's own CSVs with the level orders of their *.schema.json, so that R and
# the tests see the same data. Debian packages: r-base-core r-cran-lme4 r-cran-jsonlite
suppressMessages({library(lme4); library(jsonlite)})
args <- commandArgs(TRUE); datadir <- args[1]; outfile <- args[2]
load_data <- function(name) {
  schema <- fromJSON(file.path(datadir, paste0(name, ".schema.json")), simplifyVector = FALSE)
  d <- read.csv(file.path(datadir, paste0(name, ".csv")), colClasses = "character")
  for (col in schema$columns) {
    if (col$type == "factor") d[[col$name]] <- factor(d[[col$name]], levels = unlist(col$levels))
    else d[[col$name]] <- as.numeric(d[[col$name]])
  }
  d
}
tab <- function(a) list(rows = rownames(a), npar = unname(a$npar), AIC = unname(a$AIC), BIC = unname(a$BIC),
                        logLik = unname(a$logLik), deviance = unname(a$deviance), Chisq = unname(a$Chisq),
                        Df = unname(a$Df), p = unname(a[["Pr(>Chisq)"]]))
chibar <- function(x, df) 0.5 * pchisq(x, df, lower.tail = FALSE) + 0.5 * (if (df > 1) pchisq(x, df - 1, lower.tail = FALSE) else as.numeric(x <= 0))
out <- list()
# sleepstudy: REML fits that differ in their fixed effects; anova refits both by ML
ss <- load_data("sleepstudy")
r1 <- lmer(Reaction ~ Days + (Days | Subject), ss); r0 <- lmer(Reaction ~ 1 + (Days | Subject), ss)
a <- suppressMessages(anova(r0, r1))
out$sleepstudy_fixed <- c(list(formulas = c("Reaction ~ 1 + (Days | Subject)", "Reaction ~ Days + (Days | Subject)"), REML = TRUE), tab(a))
# sleepstudy: a random slope added to a random intercept (Df 2: chi-bar of chi2_1 and chi2_2),
# and an uncorrelated slope (Df 1: chi2_0 and chi2_1); ML fits
i1 <- lmer(Reaction ~ Days + (1 | Subject), ss, REML = FALSE)
c2 <- lmer(Reaction ~ Days + (Days | Subject), ss, REML = FALSE)
u2 <- lmer(Reaction ~ Days + (1 | Subject) + (0 + Days | Subject), ss, REML = FALSE)
a <- anova(i1, c2); x <- a$Chisq[2]
out$sleepstudy_slope <- c(list(formulas = c("Reaction ~ Days + (1 | Subject)", "Reaction ~ Days + (Days | Subject)"), REML = FALSE,
                               p_chibar = chibar(x, 2)), tab(a))
a <- anova(i1, u2); x <- a$Chisq[2]
out$sleepstudy_uncorrelated <- c(list(formulas = c("Reaction ~ Days + (1 | Subject)", "Reaction ~ Days + (1 | Subject) + (0 + Days | Subject)"),
                                      REML = FALSE, p_chibar = chibar(x, 1)), tab(a))
# cbpp: glmer (Laplace) with and without period; and the herd variance against the GLM
cb <- load_data("cbpp")
g1 <- glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), cb, family = binomial)
g0 <- glmer(cbind(incidence, size - incidence) ~ 1 + (1 | herd), cb, family = binomial)
a <- anova(g0, g1)
out$cbpp_fixed <- c(list(formulas = c("cbind(incidence, size - incidence) ~ 1 + (1 | herd)",
                                      "cbind(incidence, size - incidence) ~ period + (1 | herd)")), tab(a))
# lme4's default Laplace evaluates log|L|^2 with a factor one PIRLS iteration old (see
# ../glmm/README.md); with PIRLS converged (the glmm references' tight control) it is the
# exact Laplace approximation, which the tests match to 1e-6
tight <- glmerControl(tolPwrss = 1e-13, optimizer = "bobyqa", optCtrl = list(rhoend = 1e-10, maxfun = 1e5))
t1 <- update(g1, control = tight); t0 <- update(g0, control = tight)
a <- anova(t0, t1)
out$cbpp_fixed_tight <- c(list(control = 'glmerControl(tolPwrss = 1e-13, optimizer = "bobyqa", optCtrl = list(rhoend = 1e-10, maxfun = 1e5))'), tab(a))
gl <- glm(cbind(incidence, size - incidence) ~ period, cb, family = binomial)
lr <- as.numeric(2 * (logLik(t1) - logLik(gl)))
out$cbpp_variance_tight <- list(loglik_glmm = as.numeric(logLik(t1)), statistic = lr, p_chisq1 = pchisq(lr, 1, lower.tail = FALSE),
                                p_chibar = chibar(lr, 1))
lr <- as.numeric(2 * (logLik(g1) - logLik(gl)))
out$cbpp_variance <- list(formula = "cbind(incidence, size - incidence) ~ period + (1 | herd)", term = "(1 | herd)",
                          loglik_glm = as.numeric(logLik(gl)), loglik_glmm = as.numeric(logLik(g1)),
                          statistic = max(lr, 0), p_chisq1 = pchisq(max(lr, 0), 1, lower.tail = FALSE), p_chibar = chibar(max(lr, 0), 1))
# sleepstudy against the linear model (ML): the intercept variance, no random effect left
l0 <- lm(Reaction ~ Days, ss)
lr <- as.numeric(2 * (logLik(i1) - logLik(l0, REML = FALSE)))
out$sleepstudy_variance <- list(formula = "Reaction ~ Days + (1 | Subject)", term = "(1 | Subject)", loglik_lm = as.numeric(logLik(l0, REML = FALSE)),
                                loglik_lmm = as.numeric(logLik(i1)), statistic = lr,
                                p_chisq1 = pchisq(lr, 1, lower.tail = FALSE), p_chibar = chibar(lr, 1))
# Exact F tests from lm's sequential ANOVA (the projections onto (X, Z_-1) then (X, Z)):
# Dyestuff (1 | Batch); Pastes cask:batch given batch; an unbalanced Pastes (rows dropped)
dy <- load_data("dyestuff")
av <- anova(lm(Yield ~ Batch, dy))
out$dyestuff_exact_F <- list(formula = "Yield ~ 1 + (1 | Batch)", term = "(1 | Batch)", F = av[1, "F value"], df1 = av[1, "Df"],
                             df2 = av[2, "Df"], p = av[1, "Pr(>F)"])
pa <- load_data("pastes")
av <- anova(lm(strength ~ batch + sample, pa))
out$pastes_exact_F <- list(formula = "strength ~ 1 + (1 | batch) + (1 | sample)", term = "(1 | sample)", F = av[2, "F value"],
                           df1 = av[2, "Df"], df2 = av[3, "Df"], p = av[2, "Pr(>F)"])
drop <- c(1, 2, 7, 20, 33, 34, 58)
pu <- pa[-drop, ]
av <- anova(lm(strength ~ batch + sample, pu))
out$pastes_unbalanced_exact_F <- list(formula = "strength ~ 1 + (1 | batch) + (1 | sample)", term = "(1 | sample)", dropped_rows_1based = drop,
                                      F = av[2, "F value"], df1 = av[2, "Df"], df2 = av[3, "Df"], p = av[2, "Pr(>F)"])
# ANOVA (method-of-moments) estimators: Dyestuff one-way, Pastes nested (batch/cask), next to REML
av <- anova(lm(Yield ~ Batch, dy)); k <- 5
mr <- as.data.frame(VarCorr(lmer(Yield ~ 1 + (1 | Batch), dy)))
out$dyestuff_anova <- list(MSA = av[1, "Mean Sq"], MSE = av[2, "Mean Sq"], sigma2_between = (av[1, "Mean Sq"] - av[2, "Mean Sq"]) / k,
                           sigma2_within = av[2, "Mean Sq"], reml_between = mr$vcov[1], reml_within = mr$vcov[2])
av <- anova(lm(strength ~ batch / cask, pa)); nc <- 2; nb <- 3
mr <- as.data.frame(VarCorr(lmer(strength ~ 1 + (1 | batch / cask), pa)))
out$pastes_anova <- list(MSA = av[1, "Mean Sq"], MSB = av[2, "Mean Sq"], MSE = av[3, "Mean Sq"], df = unname(av$Df),
                         sigma2_batch = (av[1, "Mean Sq"] - av[2, "Mean Sq"]) / (nb * nc), sigma2_cask = (av[2, "Mean Sq"] - av[3, "Mean Sq"]) / nc,
                         sigma2_within = av[3, "Mean Sq"], reml_grp = mr$grp, reml_vcov = mr$vcov)
write_json(out, outfile, auto_unbox = TRUE, pretty = TRUE, digits = NA)
cat("done\n")
