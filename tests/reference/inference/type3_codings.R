# lmerTest 3.1-3 type III tables (Satterthwaite) for codings and names that type3_contrasts
# must handle. Data: cake without every 7th row from row 3 (as generate_ddf_kr.R), fitted to
# bobyqa rhoend = 1e-12. Run from tests/reference/inference: Rscript type3_codings.R
suppressMessages({library(lme4); library(lmerTest); library(jsonlite)})
ref <- normalizePath("..")
load_data <- function(name) {
  sch <- fromJSON(file.path(ref, "data", paste0(name, ".schema.json")), simplifyVector = FALSE)
  d <- read.csv(file.path(ref, "data", paste0(name, ".csv")), colClasses = "character")
  for (cl in sch$columns) d[[cl$name]] <- if (cl$type == "factor") factor(d[[cl$name]], levels = unlist(cl$levels)) else as.numeric(d[[cl$name]])
  d
}
tight <- lmerControl(optimizer = "bobyqa", optCtrl = list(rhoend = 1e-12, maxfun = 1e5))
ck <- load_data("cake"); c1 <- ck[-seq(3, 270, by = 7), ]
c1$t <- c1$temp; c1$t2 <- (c1$temp - 200)^2 / 100
c1$r <- c1$recipe; c1$rt <- factor(c1$temp)
c1$rc <- factor(paste0("r:", c1$recipe))
atab <- function(a) list(terms = rownames(a), F = unname(a[, "F value"]), num_df = unname(a[, "NumDF"]),
                         den_df = unname(a[, "DenDF"]), p = unname(a[, "Pr(>F)"]))
fits <- list(
  prefix_numeric = lmer(angle ~ t + t2 + (1 | recipe:replicate), c1, control = tight),
  prefix_factor = lmer(angle ~ r + rt + (1 | recipe:replicate), c1, control = tight),
  x_xf = lmer(angle ~ temp + temp:recipe + (1 | recipe:replicate), c1, control = tight),
  sum = lmer(angle ~ recipe * temp + (1 | recipe:replicate), c1, control = tight, contrasts = list(recipe = "contr.sum")),
  helmert = lmer(angle ~ recipe * temp + (1 | recipe:replicate), c1, control = tight, contrasts = list(recipe = "contr.helmert")),
  poly = lmer(angle ~ recipe * rt + (1 | recipe:replicate), c1, control = tight, contrasts = list(rt = "contr.poly")),
  colon_levels = lmer(angle ~ rc * temp + (1 | recipe:replicate), c1, control = tight)
)
out <- lapply(fits, function(m) c(atab(anova(m, type = 3)), criterion = REMLcrit(m)))
for (nm in names(fits)) { cat("==", nm, "\n"); print(anova(fits[[nm]], type = 3), digits = 10) }
writeLines(toJSON(out, digits = NA, pretty = TRUE), "/tmp/fix1/type3_codings.json")
