"""The explorer as a Starlette app over one `Explorer`: pages, one JSON endpoint, local assets.

    GET /                         overview: layers x FFN summary
    GET /layer/{layer}            a layer's neurons, sortable and searchable (?q=, ?sort=, ?dir=)
    GET /neuron/{layer}/{neuron}  one neuron
    GET /prompt?text=&position=   a prompt's sub-updates, logit lens and top neurons
    GET /intervene?prompt=&off=&scale=&ffn=     an intervention, as a shareable URL
    GET /api/intervene?...        the same as JSON (the page's live updates)
    GET /static/...               the stylesheet and script (nothing is fetched from elsewhere)

Bad input (an index out of range, a prompt too long, a malformed intervention) is answered with a
page (or JSON) holding one line that says what was wrong; nothing else reaches the client.
"""

from __future__ import annotations

import logging
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ffnlab.errors import FFNLabError
from ffnlab.explore import live, pages
from ffnlab.explore.explorer import Explorer

STATIC = Path(__file__).parent / "static"
LINKS = pages.Links(served=True)
# the pages load only their own stylesheet and script, and talk only to this app
POLICY = ("default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; connect-src 'self'; "
          "form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
log = logging.getLogger("ffnlab.explore")


def index(text: str, what: str) -> int:
    """A path parameter as a non-negative integer, or a one-line error."""
    if not (text.isascii() and text.isdigit()) or len(text) > 9:
        raise FFNLabError(f"{what} must be a non-negative integer, got {text[:40]!r}")
    return int(text)


def build_app(ex: Explorer) -> Starlette:
    def overview(request: Request) -> Response:
        return HTMLResponse(pages.overview(ex, LINKS))

    def layer(request: Request) -> Response:
        return HTMLResponse(pages.layer(ex, LINKS, index(request.path_params["layer"], "layer")))

    def neuron(request: Request) -> Response:
        p = request.path_params
        return HTMLResponse(pages.neuron(ex, LINKS, index(p["layer"], "layer"), index(p["neuron"], "neuron")))

    def prompt(request: Request) -> Response:
        text, position = request.query_params.get("text", ""), request.query_params.get("position", "")
        view, message = None, None
        if text:
            try:
                view = live.analyse(ex, text, index(position, "position") if position else None)
            except FFNLabError as err:
                message = str(err)
        html = pages.render("prompt.html", ex, LINKS, view=view, text=text, message=message,
                            max_chars=live.MAX_CHARS)
        return HTMLResponse(html, status_code=400 if message else 200)

    def parse(request: Request) -> tuple[str, live.Intervention]:
        q = request.query_params
        return q.get("prompt", ""), live.Intervention.parse(ex, q.get("off", ""), q.get("scale", ""), q.get("ffn", ""))

    def intervene(request: Request) -> Response:
        q = request.query_params
        view, message = None, None
        if q.get("prompt"):
            try:
                text, iv = parse(request)
                view = live.intervene(ex, text, iv)
            except FFNLabError as err:
                message = str(err)
        html = pages.render("intervene.html", ex, LINKS, view=view, message=message, prompt=q.get("prompt", ""),
                            off=q.get("off", ""), scale=q.get("scale", ""), ffn=q.get("ffn", ""),
                            share=f"{request.url.path}?{request.url.query}" if view else "",
                            max_chars=live.MAX_CHARS)
        return HTMLResponse(html, status_code=400 if message else 200)

    def api_intervene(request: Request) -> Response:
        text, iv = parse(request)
        v = live.intervene(ex, text, iv)
        return JSONResponse({"tokens": v.tokens, "kl": v.kl, "top_clean": v.top_clean,
                             "top_intervened": v.top_intervened, "intervention": iv.query(),
                             "rows": [{"token": r.token, "clean": r.clean, "intervened": r.intervened} for r in v.rows]})

    def wants_json(request: Request) -> bool:
        return request.url.path.startswith("/api/")

    async def user_error(request: Request, err: Exception) -> Response:
        if wants_json(request):
            return JSONResponse({"error": str(err)}, status_code=400)
        return HTMLResponse(pages.error(str(err), LINKS, 400), status_code=400)

    async def http_error(request: Request, err: HTTPException) -> Response:
        message = f"no page at {request.url.path[:80]!r}" if err.status_code == 404 else str(err.detail)
        if wants_json(request):
            return JSONResponse({"error": message}, status_code=err.status_code)
        return HTMLResponse(pages.error(message, LINKS, err.status_code), status_code=err.status_code)

    async def server_error(request: Request, err: Exception) -> Response:
        log.exception("error serving %s", request.url.path)  # the trace stays on the server's console
        message = f"internal error ({type(err).__name__}); the server's console has the details"
        if wants_json(request):
            return JSONResponse({"error": message}, status_code=500)
        return HTMLResponse(pages.error(message, LINKS, 500), status_code=500)

    routes = [Route("/", overview), Route("/layer/{layer}", layer), Route("/neuron/{layer}/{neuron}", neuron),
              Route("/prompt", prompt), Route("/intervene", intervene), Route("/api/intervene", api_intervene),
              Mount("/static", StaticFiles(directory=STATIC), name="static")]
    return Starlette(routes=routes, middleware=[Middleware(SecurityHeaders)],
                     exception_handlers={FFNLabError: user_error, HTTPException: http_error, Exception: server_error})


class SecurityHeaders:
    """Adds the content policy (and nosniff) to every response: a page can load nothing from elsewhere."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = list(message["headers"]) + [
                    (b"content-security-policy", POLICY.encode()), (b"x-content-type-options", b"nosniff")]
            await send(message)
        await self.app(scope, receive, send_with_headers)
