# Numerical checks of lme4's GLMM conventions (README.md, section "lme4 conventions").
# Refits cases from the CSVs in data/ (factor levels in the schema's order) and prints the
# checks; writes nothing.  Usage (from this folder, after generate_glmm.R):
#     Rscript check_conventions.R . > /tmp/check_conventions.txt
suppressMessages({library(lme4); library(jsonlite)})
args <- commandArgs(TRUE); dir <- if (length(args) >= 1) args[1] else "."
options(width = 110, digits = 10)

load_data <- function(name) {
  sch <- fromJSON(file.path(dir, "data", paste0(name, ".schema.json")), simplifyVector = FALSE)
  d <- read.csv(file.path(dir, "data", paste0(name, ".csv")), colClasses = "character")
  for (cl in sch$columns)
    d[[cl$name]] <- switch(cl$type, factor = factor(d[[cl$name]], levels = unlist(cl$levels)),
                           integer = as.integer(d[[cl$name]]), parse_float(d[[cl$name]]))
  d
}
# R's strtod is off by one ulp for a few decimals (e.g. 2 of the 7200 x values of
# binary_crossed), and so would the refits be. Decimals with at most 15 significant digits
# (all columns except the 17-digit prop/logexp) are parsed exactly instead: digits / 10^k with
# k <= 22 is one correctly rounded IEEE division, i.e. the nearest double: the value that was
# fitted and that Python's float() reads. Other strings go through as.numeric.
parse_float <- function(s) {
  m <- regmatches(s, regexec("^(-?)([0-9]+)(\\.([0-9]*))?([eE]([-+]?[0-9]+))?$", s))
  vapply(seq_along(s), function(i) {
    p <- m[[i]]
    if (length(p) == 0) return(as.numeric(s[i]))
    digits <- paste0(p[3], p[5]); e <- (if (nzchar(p[7])) as.integer(p[7]) else 0L) - nchar(p[5])
    if (nchar(sub("^0+", "", digits)) > 15 || e < -22 || e > 22) return(as.numeric(s[i]))
    v <- as.numeric(digits); v <- if (e < 0) v / 10^(-e) else v * 10^e
    if (p[2] == "-") -v else v
  }, 0)
}
case <- function(id) fromJSON(file.path(dir, "lme4", paste0(id, ".json")), simplifyVector = TRUE)
fit_case <- function(id, nAGQ = NULL, devFunOnly = FALSE) {
  cs <- case(id); d <- load_data(cs$data)
  fam <- get(cs$family)(link = cs$link)
  call <- substitute(glmer(F, data = d, family = FAM, nAGQ = NAGQ, devFunOnly = DFO),
                     list(F = as.formula(cs$formula), FAM = fam, NAGQ = if (is.null(nAGQ)) cs$nAGQ else nAGQ, DFO = devFunOnly))
  if (!is.null(cs$weights)) call$weights <- as.name(cs$weights)
  if (!is.null(cs$offset)) call$offset <- as.name(cs$offset)
  eval(call)
}
rel <- function(a, b) max(abs(a - b) / pmax(abs(b), 1e-300))
# A = Lambda' Z' W Z Lambda + I with W = working weights; log|L|^2 = log det A
Amat <- function(m, w) {
  LZ <- getME(m, "Lambdat") %*% getME(m, "Zt")
  as.matrix(tcrossprod(LZ %*% Diagonal(x = w)  , LZ)) + diag(nrow(LZ))
}
ldet <- function(A) as.numeric(determinant(A, logarithm = TRUE)$modulus)
fam_aic <- function(m) {
  r <- m@resp; f <- family(m)
  f$aic(r$y, r$n, r$mu, r$weights, sum(r$devResid()))
}
hr <- function(s) cat("\n=====", s, "=====\n")

laplace_ids <- c("binary_crossed", "poisson_nested_offset", "poisson_offset_arg", "gamma_log", "inverse_gaussian_log",
                 "binomial_slopes", "binomial_prop_weights", "probit_binary")
fits <- lapply(setNames(laplace_ids, laplace_ids), fit_case)

hr("0. the refits reproduce the stored JSON")
for (id in laplace_ids) {
  cs <- case(id); m <- fits[[id]]
  # (the JSON files hold 15 significant digits)
  cat(sprintf("%-22s max rel diff to the JSON: logLik %.1e ; beta %.1e ; theta %.1e ; deviance %.1e\n", id,
              rel(as.numeric(logLik(m)), cs$logLik_lme4), rel(unname(fixef(m)), cs$beta),
              rel(unname(getME(m, "theta")), cs$theta), rel(deviance(m), cs$objective)))
}

hr("a. Laplace: deviance(m) and -2 logLik(m) = aic + ldL2 + |u|^2")
for (id in laplace_ids) {
  m <- fits[[id]]; r <- m@resp; cmp <- m@devcomp$cmp
  u <- getME(m, "u")
  wpp <- weights(m, type = "working")                    # pp$Xwts^2: the weights inside L
  wfin <- r$sqrtXwt^2                                    # working weights at the final mu
  ld_pp <- ldet(Amat(m, wpp)); ld_fin <- ldet(Amat(m, wfin))
  m2ll <- -2 * as.numeric(logLik(m))
  cat(sprintf(paste0("%-22s deviance(m)=%.10f sum(devResid)=%.10f drsum=%.10f | -2logLik=%.10f\n",
                     "%-22s aic(resp)=%.10f aic(R family)=%.10f ldL2(cmp)=%.10f ldL2(A at L's weights)=%.10f ldL2(A at final mu)=%.10f |u|^2=%.10f\n",
                     "%-22s -2logLik - (aic+ldL2+|u|^2) = %.3e (cmp components) ; with recomputed A: %.3e ; df=%d (p=%d, ntheta=%d)\n"),
              id, deviance(m), sum(r$devResid()), cmp[["drsum"]], m2ll,
              "", r$aic(), fam_aic(m), cmp[["ldL2"]], ld_pp, ld_fin, sum(u^2),
              "", m2ll - (r$aic() + cmp[["ldL2"]] + cmp[["ussq"]]), m2ll - (fam_aic(m) + ld_pp + sum(u^2)),
              attr(logLik(m), "df"), length(fixef(m)), length(getME(m, "theta"))))
}
# fresh evaluation of the Laplace objective at the reported optimum
for (id in c("binary_crossed", "gamma_log", "binomial_slopes")) {
  m <- fits[[id]]; df <- fit_case(id, devFunOnly = TRUE)
  cat(sprintf("%-22s devfun(c(theta, beta)) from a fresh devfun = %.10f ; -2 logLik(m) = %.10f ; diff %.2e\n", id,
              df(c(getME(m, "theta"), fixef(m))), -2 * as.numeric(logLik(m)),
              df(c(getME(m, "theta"), fixef(m))) + 2 * as.numeric(logLik(m))))
}
# Gamma / IG: the dispersion inside the aic term
for (id in c("gamma_log", "inverse_gaussian_log")) {
  m <- fits[[id]]; r <- m@resp; dev <- sum(r$devResid()); n <- sum(r$weights)
  disp <- dev / n
  a_manual <- if (id == "gamma_log") -2 * sum(r$weights * dgamma(r$y, 1 / disp, scale = r$mu * disp, log = TRUE)) + 2 else
    n * (1 + log(2 * pi * disp)) + 3 * sum(r$weights * log(r$y)) + 2
  cat(sprintf("%-22s disp = dev/sum(w) = %.10f ; aic by hand (+2 included) = %.10f ; r$aic() = %.10f ; sigma(m)^2 = %.10f\n",
              id, disp, a_manual, r$aic(), sigma(m)^2))
}
m <- fits$binomial_slopes; m9 <- fits$binomial_prop_weights
cat(sprintf("binomial_slopes vs binomial_prop_weights: logLik %.10f vs %.10f ; max rel diff beta %.2e theta %.2e ; aic %.10f vs %.10f ; resp$n: %s vs %s\n",
            logLik(m), logLik(m9), rel(fixef(m9), fixef(m)), rel(getME(m9, "theta"), getME(m, "theta")),
            m@resp$aic(), m9@resp$aic(), paste(range(m@resp$n), collapse = "-"), paste(range(m9@resp$n), collapse = "-")))
m <- fits$poisson_nested_offset; m4 <- fits$poisson_offset_arg
cat(sprintf("poisson_nested_offset vs poisson_offset_arg: logLik %.10f vs %.10f ; max rel diff beta %.2e ; offsets identical: %s\n",
            logLik(m), logLik(m4), rel(fixef(m4), fixef(m)), identical(getME(m, "offset"), getME(m4, "offset"))))

hr("b. sigma(m)")
for (id in laplace_ids) {
  m <- fits[[id]]; r <- m@resp; n <- length(r$y); p <- length(fixef(m))
  V <- family(m)$variance(r$mu)
  pear2 <- sum(r$weights * (r$y - r$mu)^2 / V)
  u2 <- sum(getME(m, "u")^2)
  cat(sprintf(paste0("%-22s sigma(m)=%.10f useSc=%d | sqrt((X2+|u|^2)/n)=%.10f sqrt(X2/(n-p))=%.10f sqrt(X2/n)=%.10f sqrt(dev/n)=%.10f ",
                     "| sqrtrwt == sqrt(w/V): %.1e, wtres == sqrt(w/V)(y-mu): %.1e, wrss(cmp) - X2 = %.1e\n"),
              id, sigma(m), m@devcomp$dims[["useSc"]], sqrt((pear2 + u2) / n), sqrt(pear2 / (n - p)), sqrt(pear2 / n),
              sqrt(sum(r$devResid()) / n), rel(r$sqrtrwt, sqrt(r$weights / V)),
              max(abs(r$wtres - sqrt(r$weights / V) * (r$y - r$mu))), m@devcomp$cmp[["wrss"]] - pear2))
}

hr("c. vcov(m): finite-difference Hessian of the objective over c(theta, beta)")
for (id in laplace_ids) {
  m <- fits[[id]]; H <- m@optinfo$derivs$Hessian; nth <- length(getME(m, "theta"))
  Hi <- solve(H)[-seq_len(nth), -seq_len(nth), drop = FALSE]
  V_hess <- Hi + t(Hi)                                   # = 2 * H^{-1}[beta, beta] = solve(H/2)[beta, beta]
  V_hess2 <- solve(H / 2)[-seq_len(nth), -seq_len(nth), drop = FALSE]
  V_rx <- sigma(m)^2 * as.matrix(m@pp$unsc())            # sigma^2 (RX' RX)^{-1}
  V_rx2 <- sigma(m)^2 * chol2inv(getME(m, "RX"))
  V <- as.matrix(vcov(m))
  cat(sprintf("%-22s max rel |vcov - 2 sym(H^-1)_bb| = %.1e ; vs solve(H/2)_bb %.1e ; vs sigma^2 (RX'RX)^-1: %.2e (RX check %.1e) ; dim H = %d\n",
              id, rel(V, V_hess), rel(V, V_hess2), rel(V, V_rx), rel(V_rx, V_rx2), nrow(H)))
}
m <- fits$binary_crossed
cat("binary_crossed: vcov(m) =\n"); print(as.matrix(vcov(m)))
cat("binary_crossed: 2 sym(solve(Hessian))[beta, beta] =\n"); H <- m@optinfo$derivs$Hessian; Hi <- solve(H)[3:4, 3:4]; print(Hi + t(Hi))
cat("binary_crossed: RX-based (use.hessian = FALSE) =\n"); print(as.matrix(vcov(m, use.hessian = FALSE)))
cat("binary_crossed: Hessian (theta1, theta2, beta1, beta2) =\n"); print(H)
m <- fits$binomial_slopes; H <- m@optinfo$derivs$Hessian
cat("binomial_slopes: vcov(m) =\n"); print(as.matrix(vcov(m)))
cat("binomial_slopes: 2 sym(solve(Hessian))[beta, beta] =\n"); Hi <- solve(H)[4:5, 4:5]; print(Hi + t(Hi))
cat("binomial_slopes: RX-based =\n"); print(as.matrix(vcov(m, use.hessian = FALSE)))
for (id in c("gamma_log", "inverse_gaussian_log")) {
  m <- fits[[id]]; r <- m@resp; disp <- sum(r$devResid()) / sum(r$weights)
  cat(sprintf("%-22s vcov diag %s ; RX-based sigma^2 (RX'RX)^-1 diag %s ; disp (RX'RX)^-1 diag %s\n", id,
              paste(format(diag(as.matrix(vcov(m))), digits = 8), collapse = " "),
              paste(format(diag(as.matrix(vcov(m, use.hessian = FALSE))), digits = 8), collapse = " "),
              paste(format(disp * diag(as.matrix(m@pp$unsc())), digits = 8), collapse = " ")))
}

hr("d. nAGQ = 0")
for (id in c("binary_crossed_nagq0", "cbpp_nagq0")) {
  m <- fit_case(id); r <- m@resp; cmp <- m@devcomp$cmp
  cat(sprintf(paste0("%-22s deviance=%.10f sum(devResid)=%.10f | -2logLik=%.10f aic+ldL2+|u|^2=%.10f (diff %.1e) ldRX2 not included: %.6f\n",
                     "%-22s Hessian stored: %s ; vcov == sigma^2 (RX'RX)^-1: %.1e ; vcov(use.hessian=FALSE) identical: %s ; sigma=%g\n"),
              id, deviance(m), sum(r$devResid()), -2 * as.numeric(logLik(m)), r$aic() + cmp[["ldL2"]] + cmp[["ussq"]],
              -2 * as.numeric(logLik(m)) - (r$aic() + cmp[["ldL2"]] + cmp[["ussq"]]), cmp[["ldRX2"]],
              "", !is.null(m@optinfo$derivs), rel(as.matrix(vcov(m)), as.matrix(m@pp$unsc())),
              identical(as.matrix(vcov(m)), as.matrix(vcov(m, use.hessian = FALSE))), sigma(m)))
  # Laplace (nAGQ = 1) objective at the nAGQ = 0 estimates: same value
  df1 <- fit_case(id, nAGQ = 1, devFunOnly = TRUE)
  cat(sprintf("%-22s nAGQ=1 devfun at the nAGQ=0 (theta, beta) = %.10f vs -2 logLik(nAGQ=0 fit) = %.10f\n", "",
              df1(c(getME(m, "theta"), fixef(m))), -2 * as.numeric(logLik(m))))
  # is beta the joint PIRLS (penalized weighted LS) solution? compare with the GLS normal equations
  cat(sprintf("%-22s optinfo$val (theta only): %s ; beta = %s\n", "", paste(format(m@optinfo$val), collapse = " "),
              paste(format(fixef(m), digits = 10), collapse = " ")))
}
m1 <- fits$binary_crossed; m0 <- fit_case("binary_crossed_nagq0")
cat(sprintf("binary_crossed: nAGQ=1 logLik %.8f vs nAGQ=0 logLik %.8f\n", logLik(m1), logLik(m0)))

hr("e. nAGQ > 1: lme4's objective and the saturated part")
# exact marginal log-likelihood (adaptive numerical integration per group) at given parameters
exact_ll <- function(m) {
  r <- m@resp; fam <- family(m); g <- getME(m, "flist")[[1]]; th <- getME(m, "theta")
  eta0 <- as.vector(getME(m, "X") %*% fixef(m)) + r$offset
  total <- 0
  for (lev in levels(g)) {
    i <- which(g == lev); y <- r$y[i]; w <- r$weights[i]
    lf <- function(u) vapply(u, function(uu) {
      mu <- fam$linkinv(eta0[i] + th * uu)
      ll <- switch(fam$family, poisson = sum(dpois(y, mu, log = TRUE)),
                   binomial = sum(dbinom(round(y * w), round(w), mu, log = TRUE)))
      ll + dnorm(uu, log = TRUE)
    }, 0)
    mode <- optimize(function(u) -lf(u), c(-15, 15))$minimum
    c0 <- lf(mode)
    val <- integrate(function(u) exp(lf(u) - c0), -Inf, Inf, rel.tol = 1e-12, subdivisions = 1000)$value
    total <- total + c0 + log(val)
  }
  total
}
sat_of <- function(m) { r <- m@resp
  switch(family(m)$family, poisson = sum(dpois(r$y, r$y, log = TRUE)),
         binomial = sum(dbinom(round(r$y * r$weights), round(r$weights), r$y, log = TRUE))) }
for (id in c("poisson_agq", "binary_agq", "binary_agq15")) {
  m <- fit_case(id); r <- m@resp
  sat <- sat_of(m); ex <- exact_ll(m)
  dfl <- fit_case(id, nAGQ = 1, devFunOnly = TRUE)
  lap <- -dfl(c(getME(m, "theta"), fixef(m))) / 2
  cat(sprintf(paste0("%-14s nAGQ=%2d deviance(m)=%.8f sum(devResid)=%.8f | logLik_lme4=%.8f saturated=%.8f logLik_lme4+sat=%.8f ",
                     "exact integral=%.8f Laplace(same pars)=%.8f\n"),
              id, m@devcomp$dims[["nAGQ"]], deviance(m), sum(r$devResid()), logLik(m), sat, as.numeric(logLik(m)) + sat, ex, lap))
}
m <- fit_case("poisson_agq"); df9 <- fit_case("poisson_agq", devFunOnly = TRUE)
cat(sprintf("poisson_agq: devfun(nAGQ=9) at optimum = %.10f = -2 logLik_lme4 = %.10f\n",
            df9(c(getME(m, "theta"), fixef(m))), -2 * as.numeric(logLik(m))))
mL <- fit_case("poisson_agq", nAGQ = 1)
cat(sprintf("poisson_agq refitted with nAGQ=1: logLik %.8f (full), nAGQ=9 lme4 logLik %.8f + sat %.8f = %.8f\n",
            logLik(mL), logLik(m), sat_of(m), as.numeric(logLik(m)) + sat_of(m)))
# the AGQ formula by hand (single scalar term): sum_j [devc0_j + log L_jj^2 - 2 log mult_j]
agq_by_hand <- function(m, k) {
  r <- m@resp; fam <- family(m); g <- getME(m, "flist")[[1]]; th <- getME(m, "theta")
  eta0 <- as.vector(getME(m, "X") %*% fixef(m)) + r$offset; uhat <- getME(m, "u")
  Ldiag <- sqrt(diag(Amat(m, weights(m, type = "working"))))   # scalar term: A diagonal
  gh <- GHrule(k); tot <- 0
  for (j in seq_along(levels(g))) {
    i <- which(as.integer(g) == j)
    devc <- function(u) sum(fam$dev.resids(r$y[i], fam$linkinv(eta0[i] + th * u), r$weights[i])) + u^2
    d0 <- devc(uhat[j]); sd <- 1 / Ldiag[j]
    mult <- sum(vapply(seq_len(nrow(gh)), function(q) gh[q, "w"] * exp(-0.5 * (devc(uhat[j] + gh[q, "z"] * sd) - d0) - gh[q, "ldnorm"]) / sqrt(2 * pi), 0))
    tot <- tot + d0 + log(Ldiag[j]^2) - 2 * log(mult)
  }
  tot
}
for (id in c("poisson_agq", "binary_agq")) {
  m <- fit_case(id)
  cat(sprintf("%-14s AGQ deviance by hand (dev.resids + u^2, log L_jj^2, GHrule(%d)) = %.10f ; -2 logLik_lme4 = %.10f\n",
              id, m@devcomp$dims[["nAGQ"]], agq_by_hand(m, m@devcomp$dims[["nAGQ"]]), -2 * as.numeric(logLik(m))))
}
m <- fit_case("binary_agq"); H <- m@optinfo$derivs$Hessian; Hi <- solve(H)[-1, -1]
cat(sprintf("binary_agq vcov from AGQ Hessian: rel diff %.1e\n", rel(as.matrix(vcov(m)), as.matrix(Hi + t(Hi)))))

hr("f. summary coefficient table")
for (id in c("binary_crossed", "gamma_log")) { print(colnames(coef(summary(fits[[id]])))); print(coef(summary(fits[[id]]))) }

hr("g. ranef condsd")
for (id in c("gamma_log", "binomial_slopes", "binary_crossed", "inverse_gaussian_log")) {
  m <- fits[[id]]
  Lt <- getME(m, "Lambdat")
  for (wt in c("pp", "final")) {
    w <- if (wt == "pp") weights(m, type = "working") else m@resp$sqrtXwt^2
    C <- as.matrix(crossprod(Lt, solve(Amat(m, w), as.matrix(Lt))))   # Lambda A^{-1} Lambda'
    rr <- as.data.frame(ranef(m, condVar = TRUE))
    # lme4's b order: by term, level-major within a term (columns interleaved); match to rr rows
    cnms <- m@cnms; Gp <- m@Gp; idx <- integer(0)
    for (k in seq_along(cnms)) { nc <- length(cnms[[k]]); nl <- (Gp[k + 1] - Gp[k]) / nc
      for (cc in seq_len(nc)) idx <- c(idx, Gp[k] + (seq_len(nl) - 1) * nc + cc) }
    pred1 <- sqrt(diag(C)[idx]); predS <- sigma(m) * pred1
    cat(sprintf("%-22s weights=%-5s sigma=%.6f max rel |condsd - sigma*sqrt(diag(Lambda A^-1 Lambda'))| = %.1e ; without sigma: %.1e\n",
                id, wt, sigma(m), rel(rr$condsd, predS), rel(rr$condsd, pred1)))
  }
}

hr("g2. VarCorr and ranef values for Gamma / inverse.gaussian (useSc = TRUE)")
for (id in c("gamma_log", "inverse_gaussian_log", "binomial_slopes")) {
  m <- fits[[id]]; vc <- as.data.frame(VarCorr(m)); th <- getME(m, "theta")
  b <- as.vector(getME(m, "b")); Lu <- as.vector(t(getME(m, "Lambdat")) %*% getME(m, "u"))
  cat(sprintf("%-22s VarCorr sdcor[1]=%.10f theta[1]=%.10f sigma*theta[1]=%.10f ; b == Lambda u: %.1e ; max|ranef value| == max|b|: %s\n",
              id, vc$sdcor[1], th[1], sigma(m) * th[1], max(abs(b - Lu)),
              isTRUE(all.equal(max(abs(as.data.frame(ranef(m))$condval)), max(abs(b))))))
}

hr("f2. summary(): the 'deviance' entry of the AIC table is -2 logLik, not deviance(m)")
for (id in c("binary_crossed", "gamma_log")) {
  s <- summary(fits[[id]])
  cat(sprintf("%-22s AICtab: %s ; deviance(m) = %.6f ; -2 logLik = %.6f ; n - df = %d\n", id,
              paste(names(s$AICtab), format(s$AICtab, digits = 10), collapse = ", "), deviance(fits[[id]]),
              -2 * as.numeric(logLik(fits[[id]])), nobs(fits[[id]]) - attr(logLik(fits[[id]]), "df")))
}

hr("h. glmerControl() defaults and PIRLS trace")
str(glmerControl()[c("optimizer", "tolPwrss", "compDev", "nAGQ0initStep", "boundary.tol", "calc.derivs", "use.last.params", "restart_edge")])
str(glmerControl()$checkConv)
cat("mkGlmerDevfun maxit default:", formals(lme4:::mkGlmerDevfun)$maxit, "\n")
df <- fit_case("gamma_log", devFunOnly = TRUE)
m <- fits$gamma_log
environment(df)$verbose <- 3L
cat("PIRLS trace of one Laplace evaluation (gamma_log, theta/beta at optimum + 0.05):\n")
invisible(df(c(getME(m, "theta"), fixef(m)) + 0.05))
