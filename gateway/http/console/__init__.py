"""The operator console at /console: server-rendered pages on the ops API's functions,
with the same tokens and roles, a session cookie and CSRF protection (session.py)."""
