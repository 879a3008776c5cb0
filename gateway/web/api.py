"""The admin API under ``/api/v1``: one router with OpenAPI at ``/api/v1/openapi.json``.

Administrators log in with password (+ TOTP) for a 15-minute bearer token; automation uses API
keys (``gateway apikey create``). Every route authenticates before anything else (see
``api_base``); any other path under the prefix also answers 401 without a credential.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse

from gateway import __version__
from gateway.web import api_admins, api_audit, api_auth, api_sync, api_users
from gateway.web.api_base import PREFIX, ApiRoute

DESCRIPTION = (
    "Administer users and administrators of the credential gateway. Authenticate with "
    "`Authorization: Bearer <token>`: a token from `POST /api/v1/auth/login` (password and "
    "TOTP code) or an API key (`gwk_...`). Every change is audited with the caller and its "
    "client address."
)
MAX_BODY = 64 * 1024  # bytes; every request body of the API is small
ALL_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]

router = APIRouter(prefix=PREFIX, route_class=ApiRoute, max_body_size=MAX_BODY)


def openapi_document(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document of the admin API alone (cached on the application)."""
    cached: dict[str, Any] | None = getattr(app.state, "gateway_api_openapi", None)
    if cached is not None:
        return cached
    doc = get_openapi(
        title="Credential gateway admin API",
        version=__version__,
        description=DESCRIPTION,
        routes=app.routes,
    )
    doc["paths"] = {p: v for p, v in doc.get("paths", {}).items() if p.startswith(PREFIX)}
    components = doc.setdefault("components", {})
    components.setdefault("securitySchemes", {})["bearer"] = {
        "type": "http",
        "scheme": "bearer",
        "description": "Login token (gwt_...) or API key (gwk_...).",
    }
    doc["security"] = [{"bearer": []}]
    app.state.gateway_api_openapi = doc
    return doc


@router.get("/openapi.json", include_in_schema=False, openapi_extra={"security": []})
async def openapi(request: Request) -> JSONResponse:
    """The OpenAPI document (public: it holds no data)."""
    return JSONResponse(openapi_document(request.app))


router.include_router(api_auth.router)
router.include_router(api_users.router)
router.include_router(api_admins.router)
router.include_router(api_audit.router)
router.include_router(api_sync.router)


@router.api_route("", methods=ALL_METHODS, include_in_schema=False)
@router.api_route("/{rest:path}", methods=ALL_METHODS, include_in_schema=False)
async def not_found() -> None:
    """Anything else under the prefix: 401 without a credential, 404 with one."""
    raise HTTPException(status_code=404, detail="not found")
