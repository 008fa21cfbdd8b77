"""Whole-file tasks built on the scoring run: rerank and eval-pairs."""
