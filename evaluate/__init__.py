"""Evaluation of the pipeline: latency, lip-sync and motion metrics (see :mod:`evaluate.metrics`)."""
