"""Corpus generator and benchmark harness (``python -m bench.run``)."""
