"""Machine learning: data, training loop, determinism, inference."""
