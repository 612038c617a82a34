# Satterthwaite (lmerTest 3.1-3) and Kenward-Roger (pbkrtest 0.5.2) references on UNBALANCED
# data, where the Kenward-Roger adjustment of vcov(beta) is not zero (on the balanced cake
# data pbkrtest's adjusted SEs equal the unadjusted ones), and lmerTest's printed summaries.
# Usage (from this folder):  Rscript generate_ddf_kr.R .
# Writes ddf_kr_unbalanced.json here and lmertest_*.txt into ../summaries.
# Debian packages: r-base-core r-cran-lme4 r-cran-lmertest r-cran-pbkrtest r-cran-jsonlite
suppressMessages({library(lme4); library(lmerTest); library(pbkrtest); library(jsonlite)})
args <- commandArgs(TRUE); out <- if (length(args) >= 1) args[1] else "."
options(width = 80, digits = 7)
ref <- normalizePath(file.path(out, ".."))  # tests/reference
load_data <- function(name) {  # factor levels in the schema's order
  sch <- fromJSON(file.path(ref, "data", paste0(name, ".schema.json")), simplifyVector = FALSE)
  d <- read.csv(file.path(ref, "data", paste0(name, ".csv")), colClasses = "character")
  for (cl in sch$columns) d[[cl$name]] <- if (cl$type == "factor") factor(d[[cl$name]], levels = unlist(cl$levels)) else as.numeric(d[[cl$name]])
  d
}
coefs <- function(s) list(names = rownames(s), estimate = unname(s[, "Estimate"]), se = unname(s[, "Std. Error"]),
                          df = unname(s[, "df"]), t = unname(s[, "t value"]), p = unname(s[, "Pr(>|t|)"]))
atab <- function(a) list(terms = rownames(a), sum_sq = unname(a[, "Sum Sq"]), mean_sq = unname(a[, "Mean Sq"]),
                         F = unname(a[, "F value"]), num_df = unname(a[, "NumDF"]), den_df = unname(a[, "DenDF"]), p = unname(a[, "Pr(>F)"]))
# lme4's default optimizer stops short of the optimum on these fits (criterion ~1e-8 above
# glmm_sparse's, SEs 3e-5 apart); the references are fitted to rhoend = 1e-12 and record
# the criterion, so that the tests compare inference at the same optimum.
tight <- lmerControl(optimizer = "bobyqa", optCtrl = list(rhoend = 1e-12, maxfun = 1e5))
res <- list()
# sleepstudy without 10 rows (1-based indices below): a correlated random slope, REML and ML
ss <- load_data("sleepstudy"); ss_drop <- c(3, 10, 25, 50, 77, 100, 101, 133, 160, 171)
s1 <- ss[-ss_drop, ]
m <- lmer(Reaction ~ Days + (Days | Subject), s1, control = tight)
mml <- lmer(Reaction ~ Days + (Days | Subject), s1, REML = FALSE, control = tight)
res$sleepstudy <- list(data = "sleepstudy", dropped_rows_1based = ss_drop, formula = "Reaction ~ Days + (Days | Subject)",
  satterthwaite = coefs(summary(m)$coefficients), kenward_roger = coefs(summary(m, ddf = "Kenward-Roger")$coefficients),
  satterthwaite_ml = coefs(summary(mml)$coefficients), criterion = REMLcrit(m), criterion_ml = deviance(mml),
  vcov_kr = unname(as.matrix(vcovAdj(as(m, "lmerMod")))))
# cake without every 7th row from row 3 (no recipe x temperature cell emptied): factor x numeric interaction, type III tables
ck <- load_data("cake"); ck_drop <- seq(3, 270, by = 7); c1 <- ck[-ck_drop, ]
mc <- lmer(angle ~ recipe * temp + (1 | recipe:replicate), c1, control = tight)
res$cake <- list(data = "cake", criterion = REMLcrit(mc), dropped_rows_1based = ck_drop, formula = "angle ~ recipe * temp + (1 | recipe:replicate)",
  satterthwaite = coefs(summary(mc)$coefficients), kenward_roger = coefs(summary(mc, ddf = "Kenward-Roger")$coefficients),
  anova_type3_satterthwaite = atab(anova(mc, type = 3)), anova_type3_kenward_roger = atab(anova(mc, type = 3, ddf = "Kenward-Roger")))
# the same rows with temperature as a factor tf (levels in numeric order): factor x factor
c1$tf <- factor(c1$temp, levels = sort(unique(c1$temp)))
mf <- lmer(angle ~ recipe * tf + (1 | recipe:replicate), c1, control = tight)
res$cake_factors <- list(data = "cake", criterion = REMLcrit(mf), dropped_rows_1based = ck_drop, formula = "angle ~ recipe * tf + (1 | recipe:replicate)",
  tf_levels = levels(c1$tf), satterthwaite = coefs(summary(mf)$coefficients),
  anova_type3_satterthwaite = atab(anova(mf, type = 3)), anova_type3_kenward_roger = atab(anova(mf, type = 3, ddf = "Kenward-Roger")))
# Penicillin without 6 rows: two crossed scalar terms
pe <- load_data("penicillin"); pe_drop <- c(2, 30, 31, 77, 100, 143); p1 <- pe[-pe_drop, ]
mp <- lmer(diameter ~ 1 + (1 | plate) + (1 | sample), p1, control = tight)
res$penicillin <- list(data = "penicillin", criterion = REMLcrit(mp), dropped_rows_1based = pe_drop, formula = "diameter ~ 1 + (1 | plate) + (1 | sample)",
  satterthwaite = coefs(summary(mp)$coefficients), kenward_roger = coefs(summary(mp, ddf = "Kenward-Roger")$coefficients))
write_json(res, file.path(out, "ddf_kr_unbalanced.json"), auto_unbox = TRUE, pretty = TRUE, digits = NA)
# lmerTest's printed summaries (full data sets, bound to a variable named like the data)
sleepstudy <- ss; cake <- ck; dyestuff <- load_data("dyestuff")
txt <- function(m, f, ...) writeLines(capture.output(print(summary(m, ...))), file.path(ref, "summaries", f))
txt(lmer(Reaction ~ Days + (Days | Subject), data = sleepstudy), "lmertest_sleepstudy_reml.txt")
txt(lmer(angle ~ recipe * temp + (1 | recipe:replicate), data = cake), "lmertest_cake.txt")
txt(lmer(angle ~ recipe * temp + (1 | recipe:replicate), data = cake), "lmertest_cake_kr.txt", ddf = "Kenward-Roger")
txt(lmer(Yield ~ 1 + (1 | Batch), data = dyestuff, REML = FALSE), "lmertest_dyestuff_ml.txt")
cat("lmerTest", as.character(packageVersion("lmerTest")), "pbkrtest", as.character(packageVersion("pbkrtest")), "on", R.version.string, "\n")
