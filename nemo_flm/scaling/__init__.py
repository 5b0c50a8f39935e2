"""Scaling: loss prediction from small μP proxies (L(N) fits) and budget-aware growth planning
(L(N, D) fits, stage shapes and token splits)."""
