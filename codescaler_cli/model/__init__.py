"""The reward model: loading, the exact forward passes, and their exact shortcuts."""
