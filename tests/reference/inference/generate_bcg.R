# BCG vaccine trials (metafor's dat.bcg, Colditz et al. 1994): log relative risks and their
# sampling variances, meta-regression on absolute latitude and allocation, ML and REML.
# Usage: Rscript generate_bcg.R OUTDIR
suppressMessages({library(metafor); library(jsonlite)})
out <- commandArgs(TRUE)[1]
dat <- escalc(measure = "RR", ai = tpos, bi = tneg, ci = cpos, di = cneg, data = dat.bcg)
write.csv(data.frame(trial = dat$trial, yi = as.numeric(dat$yi), vi = as.numeric(dat$vi),
                     ablat = dat$ablat, alloc = as.character(dat$alloc)),
          file.path(out, "bcg.csv"), row.names = FALSE)
fit <- function(method) {
  f <- rma(yi, vi, mods = ~ ablat + alloc, data = dat, method = method,
           control = list(threshold = 1e-14, maxiter = 10000))
  list(tau2 = f$tau2, beta = unname(as.numeric(f$beta)), beta_names = rownames(f$beta),
       se = unname(f$se), loglik_unrestricted = as.numeric(logLik(f, REMLf = FALSE)))
}
write_json(list(data = "bcg.csv", model = "yi ~ ablat + alloc + (1 | trial), sampling variances vi known",
                metafor = as.character(packageVersion("metafor")), ml = fit("ML"), reml = fit("REML")),
           file.path(out, "bcg_known_variances.json"), auto_unbox = TRUE, digits = NA, pretty = TRUE)
