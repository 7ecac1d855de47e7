"""Built-in tasks the runner can run."""
