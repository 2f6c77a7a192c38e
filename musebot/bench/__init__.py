"""Benchmarks: every ``musebot bench*`` measurement and the statistics they share.

Figures are medians and p99 over repeats, compared as ratios within one run (the machines are shared).
``python -m musebot.bench NAME`` runs the offline ones.
"""
