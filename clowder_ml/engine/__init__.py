"""Job engine: job states and specs, and the Ray Jobs backend that runs them."""
