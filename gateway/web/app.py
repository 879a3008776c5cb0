"""The FastAPI application; routers for the portal and the admin API are added here."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from sqlalchemy import text

from gateway import __version__
from gateway.runtime import Runtime


def create_app(rt: Runtime) -> FastAPI:
    """Build the web application for one runtime."""
    app = FastAPI(title="Credential gateway", version=__version__, docs_url=None, redoc_url=None)
    app.state.rt = rt

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> JSONResponse:
        try:
            with rt.store.read() as s:
                s.execute(text("SELECT 1"))
        except Exception:  # noqa: BLE001 - health reports, never raises
            return JSONResponse({"status": "unhealthy", "database": "unreachable"}, 503)
        return JSONResponse({"status": "ok", "version": __version__})

    return app
