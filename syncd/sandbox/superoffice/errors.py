"""SuperOffice emulator, error replies: SuperOffice's error JSON, :class:`SOError`, the maintenance page."""

from __future__ import annotations

from aiohttp import web


def so_error(status: int, error_type: str, message: str, **headers: str) -> web.Response:
    """SuperOffice's error body: ``{"Error":true,"ErrorType":…,"ErrorMessage":…,"ErrorSource":…}``."""
    body = {
        "Error": True,
        "ErrorType": error_type,
        "ErrorMessage": message,
        "ErrorSource": "SuperOffice.Services.Implementation",
    }
    return web.json_response(body, status=status, headers=headers or None)


class SOError(Exception):
    """An error reply in SuperOffice's shape; raised anywhere below a request handler."""

    def __init__(self, status: int, error_type: str, message: str, **headers: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message
        self.headers = headers

    def response(self) -> web.Response:
        return so_error(self.status, self.error_type, self.message, **self.headers)


MAINTENANCE_HTML = (
    "<!DOCTYPE html><html><head><title>SuperOffice - Maintenance</title></head><body>"
    "<h1>We are upgrading SuperOffice</h1><p>The service is temporarily unavailable during scheduled "
    "maintenance. Please try again later.</p></body></html>"
)


def maintenance_page() -> web.Response:
    """The HTML page (503) the service shows while the tenant is not running."""
    return web.Response(status=503, text=MAINTENANCE_HTML, content_type="text/html")
