# One lme4 fit of one case in this fresh R process; prints one JSON record on stdout.
#
#     Rscript benchmarks/peers/lme4_fit.R DATA.csv FORMULA FAMILY FACTORS
#
# FAMILY is gaussian (lmer, REML) or a glmer family (Laplace, lme4's default nAGQ = 1);
# FACTORS names the grouping columns, comma-separated. As in run_one.py: the data are read
# first (not timed), the peak resident set (VmHWM) is reset through /proc/self/clear_refs,
# and the record gives the fit's elapsed seconds, the peak during the fit and what the fit
# added to the resident set, with logLik, fixef, VarCorr and, for glmer, the deviance.
suppressMessages({
    library(lme4)
    library(jsonlite)
})

args <- commandArgs(trailingOnly = TRUE)
path <- args[1]
model <- as.formula(args[2])
family <- args[3]
factors <- strsplit(args[4], ",")[[1]]

status_bytes <- function(key) {
    line <- grep(paste0("^", key, ":"), readLines("/proc/self/status"), value = TRUE)
    as.numeric(strsplit(trimws(sub("^[^:]*:", "", line)), " +")[[1]][1]) * 1024
}

header <- names(read.csv(path, nrows = 1, check.names = FALSE))
classes <- setNames(ifelse(header %in% factors, "factor", "numeric"), header)
data <- read.csv(path, colClasses = classes, check.names = FALSE)

# Warnings and messages (convergence, singular fit) are kept, not printed.
said <- character()
keep <- function(condition, restart) {
    said <<- c(said, conditionMessage(condition))
    invokeRestart(restart)
}
fit <- function() {
    if (family == "gaussian") lmer(model, data, REML = TRUE)
    else glmer(model, data, family = family)
}
call <- if (family == "gaussian") sprintf("lmer(%s, REML = TRUE)", args[2]) else
    sprintf("glmer(%s, family = %s)", args[2], family)

invisible(gc())
rss_before <- status_bytes("VmRSS")
writeLines("5", "/proc/self/clear_refs")
start <- proc.time()[["elapsed"]]
m <- withCallingHandlers(fit(),
    warning = function(w) keep(w, "muffleWarning"),
    message = function(m) keep(m, "muffleMessage"))
seconds <- proc.time()[["elapsed"]] - start
peak <- status_bytes("VmHWM")

record <- list(
    status = "ok",
    seconds = seconds,
    rss_before = rss_before,
    peak_rss = peak,
    peak_increment = peak - rss_before,
    loglik = as.numeric(logLik(m)),
    fixef = as.list(fixef(m)),
    varcorr = as.data.frame(VarCorr(m)),
    sigma = sigma(m),
    deviance = if (family == "gaussian") NULL else deviance(m),
    n_evals = m@optinfo$feval,
    converged = length(m@optinfo$conv$lme4$messages) == 0,
    warnings = I(unique(trimws(said))),
    r_input_bytes = as.numeric(object.size(data)),
    call = call
)
cat(toJSON(record, auto_unbox = TRUE, digits = NA, na = "null", null = "null",
           dataframe = "rows"), "\n")
