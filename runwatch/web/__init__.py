"""The HTTP server inside the daemon: health and readiness checks, Prometheus metrics and the jobs API.

``server`` runs it with the daemon, ``app`` has the routes, ``security`` the token and Host/Origin rules,
``jobs`` what the API shows of a job and how its commands reach the engine, ``metrics`` the registry.
"""
