# Golden text of lme4's print(summary(m)) for glmm_sparse's reporting tests
# (tests/test_reporting.py compares LmerResult.summary() with the NAME.txt files here).
# Usage (from this folder):  Rscript generate_summaries.R .
# Needs R with lme4 and jsonlite (Debian: r-base-core r-cran-lme4 r-cran-jsonlite).
suppressMessages({library(lme4); library(jsonlite)})
args <- commandArgs(TRUE); outdir <- if (length(args) >= 1) args[1] else "."
options(width = 80, digits = 7)  # R's defaults: lme4 prints with digits = max(3, 7 - 3) = 4
ref <- normalizePath(file.path(outdir, ".."))  # tests/reference

# Factor columns get the schema's level order (the order glmm_sparse's tests use too).
load_data <- function(name, dir) {
  sch <- fromJSON(file.path(dir, paste0(name, ".schema.json")), simplifyVector = FALSE)
  d <- read.csv(file.path(dir, paste0(name, ".csv")), colClasses = "character")
  for (cl in sch$columns) {
    d[[cl$name]] <- if (cl$type == "factor") factor(d[[cl$name]], levels = unlist(cl$levels))
                    else as.numeric(d[[cl$name]])
  }
  d
}

# "wide": simulated (seeded) data whose printed tables are wider than 80 characters, so R
# wraps the correlation of the 12 fixed effects into two blocks and the formula into three
# lines. Written to data/wide.csv and re-read, so R fits exactly what the CSV holds.
set.seed(20240201)
ng <- 30; n <- 600; gi <- rep(seq_len(ng), each = n / ng)
wide <- data.frame(f = factor(sprintf("level%02d", sample(1:10, n, TRUE))),
                   a_really_long_predictor_name_number_one = round(rnorm(n), 6),
                   another_quite_long_predictor_name_two = round(rnorm(n), 6),
                   g = factor(sprintf("g%02d", gi)))
u <- cbind(rnorm(ng, 0, 1), rnorm(ng, 0, 0.5), rnorm(ng, 0, 0.3))
wide$y <- round(as.numeric(wide$f) / 5 + (1 + u[gi, 2]) * wide[[2]] +
                (-0.5 + u[gi, 3]) * wide[[3]] + u[gi, 1] + rnorm(n), 6)
dir.create(file.path(outdir, "data"), showWarnings = FALSE)
write.csv(wide, file.path(outdir, "data", "wide.csv"), row.names = FALSE)
write_json(list(rows = nrow(wide), columns = lapply(names(wide), function(nm)
  if (is.factor(wide[[nm]])) list(name = nm, type = "factor", levels = levels(wide[[nm]]))
  else list(name = nm, type = "float"))),
  file.path(outdir, "data", "wide.schema.json"), auto_unbox = TRUE, pretty = TRUE)

# lme4's default optimizer (nloptwrap) stops a little short of the optimum on flat ridges:
# in sleepstudy_ml, penicillin_crossed and wide its criterion is 2.6e-8, 8.8e-9 and 1.3e-8
# above the minimum, which moves some printed numbers by 2-4 units of their last digit.
# Cases with `control = tight` refit with minqa's bobyqa to rhoend = 1e-12 (criterion equal
# to glmm_sparse's to ~1e-11); the control argument is dropped from the printed call.
tight <- lmerControl(optimizer = "bobyqa", optCtrl = list(rhoend = 1e-12, maxfun = 1e5))
ss <- "Reaction ~ Days + (Days | Subject)"
pen <- "diameter ~ 1 + (1 | plate) + (1 | sample)"
wide_f <- paste("y ~ f + a_really_long_predictor_name_number_one + another_quite_long_predictor_name_two",
                "+ (1 + a_really_long_predictor_name_number_one + another_quite_long_predictor_name_two | g)")

# The data frame is bound to a variable named like the case's data (or `name`), so that the
# "Data:" line shows that name (lme4 deparses the call's `data` argument).
cases <- list(
  list(id = "sleepstudy_reml", data = "sleepstudy", formula = ss, REML = TRUE),
  list(id = "sleepstudy_ml", data = "sleepstudy", formula = ss, REML = FALSE),
  list(id = "sleepstudy_ml_tight", data = "sleepstudy", formula = ss, REML = FALSE, control = tight),
  list(id = "sleepstudy_zerocorr", data = "sleepstudy", formula = "Reaction ~ Days + (Days || Subject)", REML = TRUE),
  # Reaction missing in rows 3 and 50 (1-based): 178 rows are fitted
  list(id = "sleepstudy_na", data = "sleepstudy", formula = ss, REML = TRUE, na_rows = c(3, 50), name = "sleepstudy_na"),
  list(id = "dyestuff_ml", data = "dyestuff", formula = "Yield ~ 1 + (1 | Batch)", REML = FALSE),
  list(id = "dyestuff2_singular", data = "dyestuff2", formula = "Yield ~ 1 + (1 | Batch)", REML = TRUE),
  list(id = "pastes_nested", data = "pastes", formula = "strength ~ 1 + (1 | batch/cask)", REML = TRUE),
  list(id = "penicillin_crossed", data = "penicillin", formula = pen, REML = TRUE),
  list(id = "penicillin_crossed_tight", data = "penicillin", formula = pen, REML = TRUE, control = tight),
  list(id = "cake", data = "cake", formula = "angle ~ recipe * temp + (1 | recipe:replicate)", REML = TRUE),
  list(id = "weighted", data = "weighted", formula = "y ~ x + (1 | g)", REML = TRUE, weights = "w", dir = "extra/data"),
  list(id = "weighted_ml", data = "weighted", formula = "y ~ x + (1 | g)", REML = FALSE, weights = "w", dir = "extra/data"),
  list(id = "wide", data = "wide", formula = wide_f, REML = TRUE, control = tight, dir = "summaries/data")
)

for (cs in cases) {
  d <- load_data(cs$data, file.path(ref, if (is.null(cs$dir)) "data" else cs$dir))
  if (!is.null(cs$na_rows)) d[cs$na_rows, all.vars(as.formula(cs$formula))[1]] <- NA
  nm <- if (is.null(cs$name)) cs$data else cs$name
  assign(nm, d, envir = globalenv())
  call <- bquote(lmer(.(as.formula(cs$formula)), data = .(as.name(nm)), REML = .(cs$REML)))
  if (!is.null(cs$weights)) call$weights <- as.name(cs$weights)  # evaluated in the data
  if (!is.null(cs$control)) call$control <- cs$control
  m <- suppressMessages(eval(call, globalenv()))
  m@call$control <- NULL
  txt <- capture.output(print(summary(m)))
  writeLines(txt, file.path(outdir, paste0(cs$id, ".txt")))
  cat(cs$id, ": ", length(txt), " lines\n", sep = "")
}
cat("lme4", as.character(packageVersion("lme4")), "on", R.version.string, "\n")
