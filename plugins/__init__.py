"""The built-in adapter plugins: one module per backend, each an ordinary pluggy plugin."""
