"""Evaluation of the pipeline: latency, lip-sync and motion metrics (see
:mod:`ditto_research.evaluate.metrics`)."""
