"""Inputs, readers, writers and the resumable checkpoint: everything that touches files."""
