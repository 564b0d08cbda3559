"""The seed's experiments 1-4, and more, run against a real lbproxy balancer.

``python -m experiments --help``; ``make experiments`` runs them all and writes the plots and
raw numbers under ``experiments/out/`` (``--out experiments/results`` for the committed
ones). See ``experiments/README.md`` for the results.
"""
