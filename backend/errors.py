"""Problem answers the domains share beyond Litestar's own exceptions."""

from __future__ import annotations

from litestar.exceptions import ClientException
from litestar.status_codes import HTTP_409_CONFLICT


class ConflictException(ClientException):
    """409: the request is valid but the resource's state no longer allows it."""

    status_code = HTTP_409_CONFLICT
