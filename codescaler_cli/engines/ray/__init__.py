"""The Ray engine (an optional extra: Ray is imported only when it runs)."""
