"""Test helpers: the model card's reference scoring, scoring candidates, CLI arguments."""
