"""glmm_sparse: linear and generalized linear mixed-effects models on sparse Cholesky factors."""
