"""Memorisation and data-leakage measurements: membership scores, canary exposure,
empirical epsilon lower bounds, and the canary-insertion training option.

Modules (one job each):

- :mod:`audit.memorisation.scores`: per-sequence membership scores from token log-probabilities
  (loss, zlib ratio, Min-K%, Min-K%++, reference-calibrated loss);
- :mod:`audit.memorisation.roc`: AUROC / TPR at low FPR / ROC points with bootstrap CIs over users;
- :mod:`audit.memorisation.exposure`: canary exposure from ranks and its skew-normal extrapolation;
- :mod:`audit.memorisation.epsilon`: one-run (Steinke et al. 2023) and Clopper-Pearson
  (Jagielski et al. 2020) lower bounds on epsilon;
- :mod:`audit.memorisation.list_attack`: the black-box list-based attack of Zhang et al. (CCS 2021);
- :mod:`audit.memorisation.canaries`: synthetic canary users inserted into training, and the
  ``canaries`` training variant.
"""
