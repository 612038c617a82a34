# predict.merMod references (lme4 1.1-31): new data with existing and new levels, type
# "link"/"response" for a binomial and a Poisson glmer (with an offset in the formula),
# a random slope, and re.form naming one of two crossed terms.
# estimates: lme4's beta and b, so that a test can predict from R's own estimates.
# Usage: Rscript generate_predict.R OUTDIR   (data: ../data/*.csv with their schemas)
# Debian packages: r-base-core r-cran-lme4 r-cran-jsonlite
suppressMessages({library(lme4); library(jsonlite)})
out <- commandArgs(TRUE)[1]; dir.create(out, showWarnings = FALSE, recursive = TRUE)
here <- dirname(sub("--file=", "", grep("--file=", commandArgs(FALSE), value = TRUE)))
est <- function(m) list(fixef = unname(fixef(m)), b = unname(as.numeric(getME(m, "b"))))  # lme4's b order = ours
w <- function(x, f) write_json(x, file.path(out, f), auto_unbox = TRUE, pretty = TRUE, digits = NA, null = "null")
load <- function(name) {  # factors in the schema's level order, as tests/refdata.py loads them
  schema <- fromJSON(file.path(here, "..", "data", paste0(name, ".schema.json")), simplifyDataFrame = FALSE)
  d <- read.csv(file.path(here, "..", "data", paste0(name, ".csv")), colClasses = "character")
  for (col in schema$columns) d[[col$name]] <- if (col$type == "factor")
    factor(d[[col$name]], levels = unlist(col$levels)) else as.numeric(d[[col$name]])
  d
}
# GLMMs converged tightly (lme4's defaults stop PIRLS and bobyqa early: ../glmm/README.md,
# "PIRLS noise"), so that predictions test our optimum, not lme4's stopping point
tight <- glmerControl(tolPwrss = 1e-13, optimizer = "bobyqa", optCtrl = list(rhoend = 1e-10, maxfun = 1e5))
tight_text <- 'glmerControl(tolPwrss = 1e-13, optimizer = "bobyqa", optCtrl = list(rhoend = 1e-10, maxfun = 1e5))'
# cbpp binomial: herds 1 and 5 exist, 16 is new
cb <- load("cbpp")
gb <- glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), cb, family = binomial, control = tight)
nb <- data.frame(herd = c("1", "5", "16", "16"), period = c("1", "3", "2", "4"), size = c(10, 20, 15, 5))
w(list(data = "cbpp", formula = "cbind(incidence, size - incidence) ~ period + (1 | herd)", family = "binomial", control = tight_text,
       estimates = est(gb), newdata = nb, fitted_link = unname(predict(gb)), fitted_response = unname(predict(gb, type = "response")),
       link_allow_new_levels = unname(predict(gb, newdata = nb, allow.new.levels = TRUE)),
       response_allow_new_levels = unname(predict(gb, newdata = nb, allow.new.levels = TRUE, type = "response")),
       population_link = unname(predict(gb, newdata = nb, re.form = NA)),
       population_response = unname(predict(gb, newdata = nb, re.form = NA, type = "response"))),
  "cbpp_predict.json")
# cbpp Poisson with an offset in the formula: the offset is evaluated on the new data
gp <- glmer(incidence ~ period + offset(log(size)) + (1 | herd), cb, family = poisson, control = tight)
w(list(data = "cbpp", formula = "incidence ~ period + offset(log(size)) + (1 | herd)", family = "poisson", control = tight_text,
       estimates = est(gp), newdata = nb, link_allow_new_levels = unname(predict(gp, newdata = nb, allow.new.levels = TRUE)),
       response_allow_new_levels = unname(predict(gp, newdata = nb, allow.new.levels = TRUE, type = "response")),
       population_response = unname(predict(gp, newdata = nb, re.form = NA, type = "response"))),
  "cbpp_poisson_offset_predict.json")
# sleepstudy, correlated random slope; subject 999 is new; Days off the design's grid
ss <- load("sleepstudy")
ms <- lmer(Reaction ~ Days + (Days | Subject), ss)
ns <- data.frame(Subject = c("308", "309", "372", "999", "999"), Days = c(0, 4.5, 10, 2, 12))
w(list(data = "sleepstudy", formula = "Reaction ~ Days + (Days | Subject)", REML = TRUE, estimates = est(ms), newdata = ns,
       fitted = unname(predict(ms)), conditional_allow_new_levels = unname(predict(ms, newdata = ns, allow.new.levels = TRUE)),
       population = unname(predict(ms, newdata = ns, re.form = NA))), "sleepstudy_predict.json")
# Penicillin, crossed: re.form naming one of the two terms
pe <- load("penicillin")
mpe <- lmer(diameter ~ 1 + (1 | plate) + (1 | sample), pe)
npe <- data.frame(plate = c("a", "x", "c"), sample = c("A", "F", "C"))
w(list(data = "penicillin", formula = "diameter ~ 1 + (1 | plate) + (1 | sample)", REML = TRUE, estimates = est(mpe), newdata = npe,
       conditional = unname(predict(mpe, newdata = npe)),
       plate_only = unname(predict(mpe, newdata = npe, re.form = ~ (1 | plate))),
       sample_only = unname(predict(mpe, newdata = npe, re.form = ~ (1 | sample)))), "penicillin_predict.json")
cat("done\n")
