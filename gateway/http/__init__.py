"""The HTTP edge: the request context every route runs in, and the routes."""
