"""The aiohttp application: pages, the WebSocket, the history API, operator login.

``create_app(settings)`` builds it; ``casatwin dashboard`` runs it. Blocking work (pymongo,
PyMySQL) runs in the loop's executor; password checks on one of their own, a thread or two
(each scrypt holds 128 MiB: a burst of logins queues there rather than multiplying the
memory); the bus is read on threads (see feed.py).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import orjson
import yaml
from aiohttp import WSMsgType, web
from pymongo.errors import PyMongoError

from casatwin import __version__
from casatwin.city.model import CityPack
from casatwin.config import Settings
from casatwin.errors import UserError
from casatwin.logs import get_logger
from casatwin.readmodel import store
from casatwin.registry import db
from casatwin_dashboard import history
from casatwin_dashboard.citymap import city_json, load_pack, police_units
from casatwin_dashboard.history import ApiError
from casatwin_dashboard.hub import Hub
from casatwin_dashboard.operators import LoginLimiter, OperatorStore, SessionStore
from casatwin_dashboard.privacy import driver_reference, operator_infraction, public_infraction

log = get_logger("dashboard")

T = TypeVar("T")
SESSION_COOKIE = "casatwin_session"
LOGIN_BUSY_RETRY_S = 5  # a few password checks of ~0.5 s each
VIEWS = ("live", "kiosk")
LANGUAGES = ("fr", "en")
HSTS = "max-age=31536000"
WS_BUSY_RETRY_S = 30
HEALTH_PING_S = 3.0
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; font-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'self'"
)


def static_dir() -> Path:
    return Path(str(resources.files("casatwin_dashboard") / "static"))


# An operator's answers about a person: no browser or proxy cache keeps them.
PRIVATE_HEADERS = {"Cache-Control": "no-store"}


def json_response(data: Any, status: int = 200, **kwargs: Any) -> web.Response:
    return web.Response(
        body=orjson.dumps(data), status=status, content_type="application/json", **kwargs
    )


class Dashboard:
    """Everything the handlers share, with the application's lifecycle."""

    def __init__(
        self, settings: Settings, read_bus: bool = True, clock: Callable[[], float] = time.time
    ) -> None:
        self.settings = settings
        self.read_bus = read_bus
        self.clock = clock  # sessions and logins (tests drive their own)
        self.pack, self.pack_problem = load_pack(settings)
        self.city_body = orjson.dumps(city_json(self.pack, self.pack_problem))
        self.hub = Hub(settings, police_units(self.pack))
        self.db = store.connect(settings.mongo)
        self.operators = OperatorStore(settings.mariadb)
        cfg = settings.dashboard
        self.sessions = SessionStore(cfg.session_ttl_s, cfg.session_idle_s)
        self.secure_cookie = cfg.cookie_secure or bool(cfg.tls_cert_file)
        self.limiter = LoginLimiter(cfg.login_max_failures, cfg.login_window_s)
        self.password_checks = ThreadPoolExecutor(
            cfg.login_hash_threads, thread_name_prefix="dashboard-login"
        )
        self.logins_pending = 0  # checking or waiting for a check
        self.page = (static_dir() / "index.html").read_text()
        self.openapi = orjson.dumps(
            yaml.safe_load((Path(__file__).with_name("openapi.yaml")).read_text())
        )

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(None, partial(fn, *args))

    def logins_full(self) -> bool:
        """As many logins pending as the password threads and their queue take."""
        cfg = self.settings.dashboard
        return self.logins_pending >= cfg.login_hash_threads + cfg.login_queue_max

    async def authenticate(self, name: str, password: str) -> str | None:
        """Check a login on the password executor (queued behind the checks running): the
        credential stamp of the session to open, or None."""
        loop = asyncio.get_running_loop()
        self.logins_pending += 1
        try:
            return await loop.run_in_executor(
                self.password_checks, partial(self.operators.authenticate, name, password)
            )
        finally:
            self.logins_pending -= 1

    async def on_startup(self, app: web.Application) -> None:
        # The read model's indexes are its writers' (processor, dispatcher): the dashboard
        # only reads it, and with MongoDB's authorization may do nothing else.
        self.hub.start(read_bus=self.read_bus)

    async def on_shutdown(self, app: web.Application) -> None:
        await self.hub.stop()

    async def on_cleanup(self, app: web.Application) -> None:
        self.db.client.close()
        self.password_checks.shutdown(wait=False, cancel_futures=True)

    async def operator(self, request: web.Request) -> str | None:
        """The operator logged in with this request's cookie, if the session is alive and the
        operator still exists with the password the session was opened with."""
        token = request.cookies.get(SESSION_COOKIE)
        session = self.sessions.session(token, self.clock())
        if session is None:
            return None
        if await self.run(self.operators.credential, session.operator) != session.stamp:
            self.sessions.end(token)
            log.info("operator session ended: password changed or operator removed",
                     operator=session.operator)  # fmt: skip
            return None
        return session.operator


DASHBOARD = web.AppKey("dashboard", Dashboard)


# -- middlewares ------------------------------------------------------------------------------


@web.middleware
async def errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """API errors as JSON with a message and a hint; a bug as a 500 that says so."""
    try:
        return await handler(request)
    except ApiError as exc:
        return json_response(exc.body(), exc.status)
    except web.HTTPException as exc:
        if request.path.startswith("/api/") and exc.status >= 400:
            return json_response({"error": exc.reason}, exc.status)
        raise
    except UserError as exc:  # a server we need is not reachable
        return json_response({"error": exc.message, "hint": exc.hint}, 503)
    except PyMongoError as exc:
        log.warning("read model unavailable", path=request.path, reason=str(exc)[:200])
        return json_response(
            {
                "error": "the history is unavailable: the read model (MongoDB) cannot be reached",
                "hint": "the live view still works; CASATWIN_MONGO_URL says where it should be",
            },
            503,
        )
    except db.Error as exc:
        log.warning("MariaDB unavailable", path=request.path, reason=str(exc)[:200])
        return json_response(
            {"error": "MariaDB cannot be reached", "hint": "CASATWIN_MARIADB_* say where it is"},
            503,
        )
    except Exception:
        log.exception("request failed", path=request.path)
        return json_response({"error": "internal error (logged)"}, 500)


@web.middleware
async def security_headers(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    response = await handler(request)
    if not response.prepared:
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        response.headers.setdefault("Cache-Control", "no-cache")
        if request.secure:  # browsers that came once over HTTPS never try plain HTTP again
            response.headers.setdefault("Strict-Transport-Security", HSTS)
    return response


# -- pages and the WebSocket ------------------------------------------------------------------


def page(view: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        dash = request.app[DASHBOARD]
        language = request.query.get("lang", "")
        if language not in LANGUAGES:
            language = dash.settings.dashboard.kiosk_language if view == "kiosk" else ""
        html = dash.page.replace("{{view}}", view).replace("{{language}}", language)
        return web.Response(text=html, content_type="text/html")

    return handler


async def websocket(request: web.Request) -> web.StreamResponse:
    dash = request.app[DASHBOARD]
    view = request.query.get("view", "live")
    view = view if view in VIEWS else "live"
    same_origin(request)  # a page of another site must not read the feed with our visitor
    hub = dash.hub
    if len(hub.fanout.clients) >= dash.settings.dashboard.max_clients:
        log.warning("WebSocket client refused: the dashboard is full", client=request.remote,
                    clients=len(hub.fanout.clients))  # fmt: skip
        return json_response(
            {"error": "the dashboard serves as many screens as it can", "hint": "retry later"},
            503,
            headers={"Retry-After": str(WS_BUSY_RETRY_S)},
        )
    ws = web.WebSocketResponse(compress=False, heartbeat=20.0, max_msg_size=65536, timeout=5.0)
    await ws.prepare(request)
    bound_send_buffer(request, dash.settings.dashboard.send_buffer_kb)
    client = hub.fanout.add(ws, request, view, hub.hello(view, request.query.get("lang", "")))
    client.push(hub.snapshot())
    try:
        async for message in ws:
            if message.type == WSMsgType.ERROR:
                break  # clients have nothing to say; pings are answered by aiohttp
    finally:
        hub.fanout.remove(client)
    return ws


def bound_send_buffer(request: web.Request, kib: int) -> None:
    """Cap the kernel's send buffer of this connection (autotuning would allow megabytes)."""
    sock = request.transport.get_extra_info("socket") if request.transport else None
    if kib > 0 and sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, kib * 1024)


# -- the API ----------------------------------------------------------------------------------


async def city(request: web.Request) -> web.Response:
    return web.Response(
        body=request.app[DASHBOARD].city_body,
        content_type="application/json",
        headers={"Cache-Control": "max-age=300"},
    )


async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=request.app[DASHBOARD].openapi, content_type="application/json")


async def health(request: web.Request) -> web.Response:
    """Whether the dashboard works, for anyone; what went wrong, and whom it dropped, for
    operators only (errors name internal hosts, dropped clients their addresses)."""
    dash = request.app[DASHBOARD]
    try:
        await asyncio.wait_for(dash.run(dash.db.command, "ping"), HEALTH_PING_S)
        read_model_error = ""
    except TimeoutError:
        read_model_error = f"no answer within {HEALTH_PING_S:.0f} s from {read_model_hosts(dash)}"
    except Exception as exc:
        read_model_error = str(exc)[:200] or type(exc).__name__
    feeds = {f.name: f.status.as_dict() for f in dash.hub.feeds}
    reading = all(f["state"] == "reading" for f in feeds.values())
    body: dict[str, Any] = {
        "status": "ok" if not read_model_error and reading else "degraded",
        "version": __version__,
        "uptime_s": round(time.time() - dash.hub.started_at, 1),
        "clients": len(dash.hub.fanout.clients),
        "clients_dropped": len(dash.hub.fanout.dropped),
        "vehicles": dash.hub.positions.count_alive(),
        "feeds": {name: {k: v for k, v in f.items() if k != "error"} for name, f in feeds.items()},
        "read_model": {"ok": not read_model_error},
        "city": {"name": dash.pack.name if dash.pack else "", "ok": not dash.pack_problem},
        "push_ms": push_percentiles(dash.hub.fanout.push_ms),
    }
    if await dash.operator(request):
        body["details"] = {
            "feed_errors": {name: f["error"] for name, f in feeds.items() if f["error"]},
            "read_model_error": read_model_error,
            "city_problem": dash.pack_problem,
            "dropped_clients": list(dash.hub.fanout.dropped),
        }
    return json_response(body, headers=PRIVATE_HEADERS if "details" in body else None)


def read_model_hosts(dash: Dashboard) -> str:
    """Where the read model should be (host:port, never the URL's credentials)."""
    servers = dash.db.client.topology_description.server_descriptions()
    return ", ".join(f"{host}:{port}" for host, port in servers)


def push_percentiles(samples: Iterable[float]) -> dict[str, float | None]:
    """p50/p95/p99 of the last positions pushes (tick → socket), server side."""
    ordered = sorted(samples)
    if not ordered:
        return {"p50": None, "p95": None, "p99": None, "samples": 0}

    def pick(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)

    return {"p50": pick(0.5), "p95": pick(0.95), "p99": pick(0.99), "samples": len(ordered)}


def now_ms() -> int:
    return int(time.time() * 1000)


def canonical_district(params: dict[str, str], pack: CityPack | None) -> dict[str, str]:
    """``district=maarif`` → the pack's spelling (``Maârif``), or a 400 listing the names."""
    if "district" not in params or pack is None or not pack.districts:
        return params
    try:
        name = pack.district(params["district"].strip()).name
    except KeyError:
        known = ", ".join(d.name for d in pack.districts)
        raise history.bad(
            f"district={params['district']!r} is not a district of {pack.title}",
            f"districts: {known}",
        ) from None
    return {**params, "district": name}


async def infractions(request: web.Request) -> web.Response:
    dash = request.app[DASHBOARD]
    params = canonical_district(dict(request.query), dash.pack)
    query = history.infraction_query(params, now_ms())
    searched = [f"{name}:{params[name].strip()}" for name in ("plate", "vehicle") if name in params]
    if searched:  # one vehicle's history: an operator's question, and audited
        operator = await dash.operator(request)
        if operator is None:
            raise ApiError(
                401,
                "searching by plate or vehicle is for operators",
                "log in as an operator (POST /api/login), or filter by type, class or district",
            )
        await audited(request, operator, "", ",".join(searched))
    docs, cursor = await dash.run(history.find_infractions, dash.db, query)
    items = [public_infraction(d) for d in docs]
    body = {"items": items, "count": len(items), "next_cursor": cursor}
    return json_response(body, headers=PRIVATE_HEADERS if searched else None)


async def infraction(request: web.Request) -> web.Response:
    dash = request.app[DASHBOARD]
    infraction_id = request.match_info["infraction_id"]
    doc = await dash.run(history.find_infraction, dash.db, infraction_id)
    if doc is None:
        raise ApiError(404, f"no infraction {infraction_id!r}", "ids come from /api/infractions")
    operator = await dash.operator(request)
    if operator is None:
        return json_response(public_infraction(doc))
    await audited(request, operator, infraction_id, driver_reference(doc))
    try:
        charged = await dash.run(dash.operators.identity, infraction_id)
    except Exception as exc:
        log.error("identity not read from the ledger", infraction_id=infraction_id,
                  reason=str(exc))  # fmt: skip
        raise ApiError(503, "the identity cannot be read from the ledger", "retry later") from None
    if charged is None:  # in the read model but not in the ledger: a bug, not a user mistake
        raise ApiError(
            404,
            f"infraction {infraction_id!r} is not in the ledger: its identity cannot be shown",
            "the read model and the ledger disagree; tell the administrator",
        )
    log.info("driver identity shown", operator=operator, infraction_id=infraction_id)
    return json_response(
        operator_infraction(doc, charged.driver, charged.owner), headers=PRIVATE_HEADERS
    )


async def audited(request: web.Request, operator: str, infraction_id: str, subject: str) -> None:
    """Write the audit row of an operator's look at a driver or a vehicle, or refuse (503):
    no audit row, nothing shown."""
    dash = request.app[DASHBOARD]
    try:
        await dash.run(
            dash.operators.record_view,
            operator,
            infraction_id,
            subject,
            request.remote or "",
            f"{request.method} {request.path_qs}",
        )
    except Exception as exc:
        log.error("identity view not audited; nothing shown", operator=operator, reason=str(exc))
        raise ApiError(
            503, "the identity cannot be shown: the audit log cannot be written", "retry later"
        ) from None


async def timeline(request: web.Request) -> web.Response:
    dash = request.app[DASHBOARD]
    infraction_id = request.match_info["infraction_id"]
    doc = await dash.run(history.find_infraction, dash.db, infraction_id)
    events = await dash.run(history.find_timeline, dash.db, infraction_id)
    if doc is None and not events:
        raise ApiError(404, f"no incident {infraction_id!r}", "ids come from /api/infractions")
    return json_response({"infraction": public_infraction(doc) if doc else None, "events": events})


async def congestion(request: web.Request) -> web.Response:
    dash = request.app[DASHBOARD]
    key = request.match_info["key"]
    query = history.congestion_query(key, request.query, now_ms())
    items, truncated = await dash.run(history.find_congestion, dash.db, query)
    return json_response({"key": key, "items": items, "truncated": truncated})


# -- operators ----------------------------------------------------------------------------------


def same_origin(request: web.Request) -> None:
    """Refuse state-changing requests and WebSocket connections from other sites' pages
    (SameSite covers the cookie; this covers old browsers, and sockets, which carry none)."""
    origin = request.headers.get("Origin")
    if origin and origin.split("://", 1)[-1] != request.host:
        raise ApiError(403, "cross-site request refused")


async def login(request: web.Request) -> web.Response:
    dash = request.app[DASHBOARD]
    same_origin(request)
    try:
        body = await request.json(loads=orjson.loads)
        name, password = body["name"], body["password"]
        if not isinstance(name, str) or not isinstance(password, str):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise history.bad(
            "the body should be JSON with a name and a password",
            '{"name": "amina.b", "password": "..."}',
        ) from None
    if dash.logins_full():
        # Nothing counted against the caller: this is load, not a wrong password.
        return json_response(
            {"error": "too many logins at once", "hint": "try again in a few seconds"},
            503,
            headers={"Retry-After": str(LOGIN_BUSY_RETRY_S)},
        )
    now = dash.clock()
    keys = [f"address:{request.remote}", f"name:{name.lower()}"]
    # Counted before the check, in the same turn of the loop: concurrent attempts all count.
    wait = dash.limiter.reserve(keys, now)
    if wait > 0:
        return json_response(
            {"error": "too many failed logins", "hint": f"try again in {wait:.0f} s"},
            429,
            headers={"Retry-After": str(int(wait) + 1)},
        )
    try:
        stamp = await dash.authenticate(name, password)
    except Exception:
        dash.limiter.release(keys, now)  # MariaDB away: not the caller's failure
        raise
    if stamp is None:
        log.warning("failed operator login", name=name[:64], address=request.remote)
        raise ApiError(401, "wrong name or password")
    dash.limiter.succeeded(keys)
    token = dash.sessions.create(name, stamp, now)
    log.info("operator logged in", operator=name, address=request.remote)
    response = json_response({"operator": name})
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=dash.settings.dashboard.session_ttl_s,
        httponly=True,
        samesite="Strict",
        secure=dash.secure_cookie,
        path="/",
    )
    return response


async def logout(request: web.Request) -> web.Response:
    dash = request.app[DASHBOARD]
    same_origin(request)
    dash.sessions.end(request.cookies.get(SESSION_COOKIE))
    response = web.Response(status=204)
    response.del_cookie(SESSION_COOKIE, path="/")
    return response


async def me(request: web.Request) -> web.Response:
    return json_response({"operator": await request.app[DASHBOARD].operator(request)})


async def api_not_found(request: web.Request) -> web.Response:
    raise ApiError(404, f"no such endpoint {request.path}", "see /api/openapi.json")


# -- the application ------------------------------------------------------------------------------


def create_app(
    settings: Settings, *, read_bus: bool = True, clock: Callable[[], float] = time.time
) -> web.Application:
    """The dashboard application (``read_bus=False`` for API-only tests; ``clock`` for tests
    that drive the sessions' time)."""
    app = web.Application(middlewares=[errors, security_headers])
    dash = Dashboard(settings, read_bus=read_bus, clock=clock)
    app[DASHBOARD] = dash
    app.on_startup.append(dash.on_startup)
    app.on_shutdown.append(dash.on_shutdown)
    app.on_cleanup.append(dash.on_cleanup)
    app.router.add_get("/", page("live"))
    app.router.add_get("/kiosk", page("kiosk"))
    app.router.add_get("/ws", websocket)
    app.router.add_get("/api/health", health)
    app.router.add_get("/api/openapi.json", openapi)
    app.router.add_get("/api/city", city)
    app.router.add_get("/api/infractions", infractions)
    app.router.add_get("/api/infractions/{infraction_id}", infraction)
    app.router.add_get("/api/incidents/{infraction_id}/timeline", timeline)
    app.router.add_get("/api/congestion/{key}", congestion)
    app.router.add_post("/api/login", login)
    app.router.add_post("/api/logout", logout)
    app.router.add_get("/api/me", me)
    app.router.add_route("*", "/api/{tail:.*}", api_not_found)
    app.router.add_static("/static", static_dir())
    return app
