"""The seed's experiments 1-4, and more, run against a real lbproxy balancer.

``python -m experiments --help``; ``make experiments`` runs them all and writes the plots and
raw numbers under ``experiments/results/``. See ``experiments/README.md`` for the results.
"""
