"""Business Central emulator, error replies in BC's shape.

``{"error": {"code", "message": "…  CorrelationId:  <guid>."}}`` with ``Content-Type:
application/json; charset=utf-8``; :class:`ODataError` is raised anywhere below a handler and turned into
that reply by the request pipeline (``emulator.py``).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping

from aiohttp import web

from syncd.sandbox.businesscentral.state import ERROR_CONTENT_TYPE


class ODataError(Exception):
    """An error reply in BC's shape; raised anywhere below a request handler."""

    def __init__(
        self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


def error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    body = {"error": {"code": code, "message": f"{message}  CorrelationId:  {uuid.uuid4()}."}}
    return web.Response(
        status=status,
        body=json.dumps(body, separators=(",", ":")).encode(),
        headers={"Content-Type": ERROR_CONTENT_TYPE, **(headers or {})},
    )


def _syntax_error() -> ODataError:
    return ODataError(400, "BadRequest_NotFound", "Bad Request - Error in query syntax.")


def _no_property(name: str, type_name: str) -> ODataError:
    return ODataError(
        400, "BadRequest", f"Could not find a property named '{name}' on type 'Microsoft.NAV.{type_name}'."
    )


def _segment_not_found(segment: str) -> ODataError:
    return ODataError(404, "BadRequest_ResourceNotFound", f"Resource not found for the segment '{segment}'.")


def _method_not_allowed(method: str, segment: str, edm_type: str) -> ODataError:
    return ODataError(
        405,
        "BadRequest_MethodNotAllowed",
        f"'{method}' requests for '{segment}' of EdmType '{edm_type}' are not allowed within Dynamics 365 "
        "Business Central OData web services.",
    )
