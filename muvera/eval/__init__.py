"""Evaluation: BEIR loading, the embedding cache, metrics and benchmark runs."""
