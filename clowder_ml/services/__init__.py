"""Business logic per resource. Routers call exactly one service function per request."""
