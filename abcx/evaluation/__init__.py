"""Evaluation: metrics (`metrics`: Avg@n, unbiased Pass@k, bootstrap CIs) and benchmark loading
(`benchmarks`: AIME 24/25, AMC 23, MATH-500, HMMT Feb 25, the `arith` testbed, local files).

Submodules are imported explicitly (`from abcx.evaluation.metrics import summarise`) so that importing
the package stays free of numpy/datasets.
"""
