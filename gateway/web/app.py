"""The FastAPI application; routers for the portal and the admin API are added here."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy import text
from starlette.responses import Response

from gateway import __version__
from gateway.errors import Overloaded
from gateway.runtime import Runtime
from gateway.web import admin_ui, metrics, portal
from gateway.web.api import router as api_router
from gateway.web.common import STATIC, CsrfRefused, make_context, render
from gateway.web.login import SignInRequired
from gateway.web.security import SecurityHeaders, is_https


def create_app(rt: Runtime) -> FastAPI:
    """Build the web application for one runtime."""
    app = FastAPI(title="Credential gateway", version=__version__, docs_url=None, redoc_url=None)
    app.state.rt = rt
    app.state.web = make_context(rt)
    app.add_middleware(SecurityHeaders, https=is_https(rt.settings.http.base_url))
    app.add_exception_handler(CsrfRefused, _csrf_refused)
    app.add_exception_handler(Overloaded, _overloaded)
    app.add_exception_handler(SignInRequired, _sign_in_required)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.include_router(portal.router)
    app.include_router(admin_ui.router)
    app.include_router(api_router)
    app.include_router(metrics.router)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> JSONResponse:
        try:
            with rt.store.read() as s:
                s.execute(text("SELECT 1"))
        except Exception:  # noqa: BLE001 - health reports, never raises
            return JSONResponse({"status": "unhealthy", "database": "unreachable"}, 503)
        return JSONResponse({"status": "ok", "version": __version__})

    return app


async def _csrf_refused(request: Request, exc: Exception) -> Response:
    """A POST without the right CSRF token changes nothing and gets 403."""
    data = {
        "title": "Request refused",
        "message": "The form was stale or did not come from this site. "
        "Go back, reload and try again.",
        "link": None,
    }
    return render(request, "message.html", data, status=403)


async def _sign_in_required(request: Request, exc: Exception) -> Response:
    """A page that needs a signed-in session: send the browser to the right step."""
    assert isinstance(exc, SignInRequired)
    return exc.response


async def _overloaded(request: Request, exc: Exception) -> Response:
    """The bounded hash pool is full: shed the request with 503 and Retry-After."""
    data = {"title": "Busy", "message": "The service is busy. Try again in a moment.", "link": None}
    response = render(request, "message.html", data, status=503)
    response.headers["Retry-After"] = "1"
    return response
