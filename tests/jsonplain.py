"""What every result's to_dict() must be: these keys, and nothing but plain JSON values."""
import math

LMM_RESULT_KEYS = {
    "formula", "reml", "data_name", "nobs", "n_dropped", "objective", "loglik", "aic", "bic",
    "npar", "df_resid", "sigma", "theta", "theta_names", "fixef", "fixef_se", "vcov",
    "varcorr", "ranef", "ngrps", "is_singular", "converged", "optimizer", "dropped_columns",
    "fitted", "residuals", "ddf", "fixed_effects"}
GLMM_RESULT_KEYS = LMM_RESULT_KEYS | {"family", "link", "nagq", "deviance", "stage1"}


def plain_only(x) -> bool:
    """str/int/bool/None, finite floats, and lists and str-keyed dicts of them."""
    if isinstance(x, dict):
        return all(isinstance(k, str) and plain_only(v) for k, v in x.items())
    if isinstance(x, list):
        return all(plain_only(v) for v in x)
    if isinstance(x, float):
        return math.isfinite(x)
    return x is None or type(x) in (str, int, bool)
