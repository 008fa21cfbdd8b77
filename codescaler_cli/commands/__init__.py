"""One module per command; `codescaler_cli.cli` registers them."""
