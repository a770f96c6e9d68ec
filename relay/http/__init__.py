"""The one HTTP server: /metrics, /healthz, /readyz and the admin API."""

from relay.http.server import HttpServer, build_app

__all__ = ["HttpServer", "build_app"]
