"""HTTP API (FastAPI): thin routers over ``clowder_ml.services``."""
