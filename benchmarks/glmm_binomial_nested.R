# lme4's time for the nested binomial case of benchmarks/glmm_speed.py.
# Usage: python benchmarks/glmm_speed.py nested --csv /tmp/binom.csv --repeat 1
#        Rscript benchmarks/glmm_binomial_nested.R /tmp/binom.csv
suppressMessages(library(lme4))
d <- read.csv(commandArgs(TRUE)[1])
d$region <- factor(d$region); d$site <- factor(d$site)
t0 <- proc.time()[["elapsed"]]
m <- glmer(y ~ x + z + (1 | region/site), d, family = binomial)
cat(sprintf("lme4 %s: %.1f s, logLik %.6f\n", packageVersion("lme4"),
            proc.time()[["elapsed"]] - t0, as.numeric(logLik(m))))
