"""The console's routes: the JSON API (``/api/v1``), the operator's pages, live events,
``/metrics`` and ``/healthz``.

Rules:
- Nothing but ``/login``, ``/healthz``, ``/static`` and (when ``metrics_login`` is off)
  ``/metrics`` answers a caller who is not logged in: pages redirect to ``/login``, the API
  answers 401.
- A caller is a user with a login session (cookie) or an API token (``Authorization: Bearer``).
  A request that changes something with a session must carry its CSRF token (form field
  ``csrf`` or header ``X-CSRF-Token``); API tokens are not cookies, so they need none.
- Every refusal is a clear message with its status (401, 403, 404, 409, 422, 429), a
  ``console_refused`` log line, and no change.
- Every change is committed together with an audit row naming the user.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from importlib import resources
from typing import Any, TypeVar
from urllib.parse import quote, urlencode

import attrs
import psycopg
import trio
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from protocols.catalog import Category
from protocols.errors import CollisionError, NotFoundError, RegistryError
from receiver.bridge_state import bridge_report_rows
from receiver.dc09_listener import account_link
from receiver.registry import AccountCheck, AccountSpec, Registry
from receiver.registry.service import AccountEdit
from receiver.store.console_sql import SignalFilter, User  # records both backends share
from receiver.store.faults import fault_line
from receiver.store.interface import ConsoleTables, StoreError

from . import auth
from .metrics import scrape
from .openapi import OPENAPI
from .state import CONSOLE_STORE_ERRORS, ConsoleState, now_us
from .views import moment, signal_detail, signal_summary

_T = TypeVar("_T")

SESSION_COOKIE = "receiver_session"
MAX_LIMIT = 500
MAX_BODY = 64 * 1024
# What a request may meet when the store is down or lost, on either backend (answered 503).
STORE_FAULTS: tuple[type[Exception], ...] = (StoreError, sqlite3.Error, psycopg.Error)


class Refusal(Exception):  # noqa: N818 - it is the answer, not a bug
    """A request the console refuses: the status and the message the caller sees."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


@attrs.frozen
class Caller:
    user: User
    csrf: str | None  # None: an API token (no cookie, no CSRF)


Handler = Callable[[Request], Awaitable[Response]]


def build_app(state: ConsoleState) -> Starlette:
    templates = Environment(
        loader=PackageLoader("receiver.console", "templates"),
        autoescape=select_autoescape(["html"]),
        enable_async=False,
    )
    templates.globals["moment"] = moment
    log = state.log
    sql: Any = state.sql  # the store's console statements (SQLite or PostgreSQL)

    def is_api(request: Request) -> bool:
        return request.url.path.startswith("/api/")

    def render(
        request: Request, name: str, caller: Caller | None, status: int = 200, **context: Any
    ) -> HTMLResponse:
        body = templates.get_template(name).render(
            request=request,
            user=caller.user if caller else None,
            csrf=caller.csrf if caller else None,
            can_ack=bool(caller and auth.role_allows(caller.user.role, "operator")),
            is_admin=bool(caller and auth.role_allows(caller.user.role, "admin")),
            **context,
        )
        return HTMLResponse(body, status_code=status)

    # -- who is calling --------------------------------------------------------------------

    async def identify(request: Request) -> Caller | None:
        header = request.headers.get("authorization", "")
        if header.lower().startswith("bearer "):
            digest = auth.token_hash(header[7:].strip())
            user = await state.reader.run(lambda tables: tables.token_user(digest))
            if user is None:
                raise Refusal(401, "unknown or revoked API token")
            return Caller(user, None)
        cookie = request.cookies.get(SESSION_COOKIE)
        if not cookie:
            return None
        digest = auth.token_hash(cookie)
        session = await state.reader.run(lambda tables: tables.session(digest))
        if session is None:
            return None
        if session.expires_us < now_us():
            raise Refusal(401, "your session has expired: log in again")
        return Caller(session.user, session.csrf)

    async def require(request: Request, role: str = "viewer") -> Caller:
        caller = await identify(request)
        if caller is None:
            raise Refusal(401, "log in first")
        if not auth.role_allows(caller.user.role, role):
            article = "an" if role[0] in "aeiou" else "a"
            raise Refusal(
                403, f"{caller.user.name} is a {caller.user.role}; this needs {article} {role}"
            )
        request.state.user = caller.user.name
        return caller

    async def check_csrf(request: Request, caller: Caller, form_token: str | None) -> None:
        if caller.csrf is None:
            return
        token = form_token or request.headers.get("x-csrf-token")
        if not auth.same_secret(token, caller.csrf):
            raise Refusal(403, "missing or wrong CSRF token: reload the page and try again")

    # -- errors -----------------------------------------------------------------------------

    async def refused(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Refusal)
        log.warning(
            "console_refused",
            status=exc.status,
            reason=exc.message,
            method=request.method,
            path=request.url.path,
            user=getattr(request.state, "user", None),
            peer=request.client.host if request.client else None,
        )
        if is_api(request) or request.url.path in ("/metrics", "/events/signals"):
            return JSONResponse({"error": exc.message}, exc.status, headers=exc.headers)
        if exc.status == 401:
            target = "/login?" + urlencode({"next": request.url.path, "message": exc.message})
            return RedirectResponse(target, 303)
        caller = None
        try:
            caller = await identify(request)
        except Refusal:
            caller = None
        page = render(
            request, "error.html", caller, status=exc.status, message=exc.message, code=exc.status
        )
        page.headers.update(exc.headers)
        return page

    async def store_down(request: Request, exc: Exception) -> Response:
        """A store fault (the server down or lost, the disk failing) is 503, not a traceback:
        the console started without its store and answers again once it is back."""
        reason = fault_line(exc) or str(exc)
        log.error("console_store_down", error=reason, path=request.url.path)
        message = f"the store is unavailable: {reason}"
        if is_api(request) or request.url.path in ("/metrics", "/events/signals"):
            return JSONResponse({"error": message}, 503)
        # No caller to show: naming one would read the store again.
        return render(request, "error.html", None, status=503, message=message, code=503)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return await refused(request, Refusal(exc.status_code, str(exc.detail)))

    # -- health and metrics --------------------------------------------------------------------

    async def healthz(request: Request) -> Response:
        listening = state.service.ports is not None and not state.service.shutting_down
        try:
            store_up = await state.reader.run(lambda tables: tables.alive())
        except CONSOLE_STORE_ERRORS as exc:
            log.error("console_store_down", error=str(exc))
            store_up = False
        body = {
            "status": "ok" if listening and store_up else "down",
            "listeners": "up" if listening else "down",
            "store": "up" if store_up else "down",
        }
        return JSONResponse(body, 200 if listening and store_up else 503)

    async def metrics(request: Request) -> Response:
        if state.config.console.metrics_login:
            await require(request)
        body = await scrape(state)
        return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")

    # -- login -------------------------------------------------------------------------------

    async def login_page(request: Request) -> Response:
        return render(
            request,
            "login.html",
            None,
            message=request.query_params.get("message"),
            next=request.query_params.get("next", "/signals"),
        )

    async def login(request: Request) -> Response:
        form = await request.form()
        name = str(form.get("name") or "").strip()
        password = str(form.get("password") or "")
        target = str(form.get("next") or "/signals")
        if not target.startswith("/") or target.startswith("//"):
            target = "/signals"
        peer = request.client.host if request.client else "?"
        keys = [f"user:{name}", f"addr:{peer}"]
        wait = state.limiter.retry_after(keys, trio.current_time())
        if wait > 0:
            raise Refusal(
                429,
                f"too many failed logins: try again in {math.ceil(wait)} s",
                {"Retry-After": str(math.ceil(wait))},
            )
        if not name or not password:
            raise Refusal(422, "give a user name and a password")
        found = await state.reader.run(lambda tables: tables.user_by_name(name))
        ok = await trio.to_thread.run_sync(
            auth.verify_password, found.password_hash if found else None, password
        )
        if found is None or not ok or found.disabled:
            state.limiter.failed(keys, trio.current_time())
            log.warning("console_login_failed", user=name, peer=peer)
            return render(
                request,
                "login.html",
                None,
                status=401,
                message="wrong user name or password",
                next=target,
            )
        state.limiter.succeeded(keys)
        token = auth.new_token()
        created = now_us()
        expires = created + int(state.config.console.session_hours * 3600 * 1_000_000)
        await state.write(
            [
                (
                    sql.INSERT_SESSION,
                    (auth.token_hash(token), found.user.id, auth.new_token(), created, expires),
                ),
                (sql.DELETE_EXPIRED_SESSIONS, (created,)),
            ]
        )
        log.info("console_login", user=name, peer=peer)
        response = RedirectResponse(target, 303)
        response.set_cookie(
            SESSION_COOKIE,
            token,
            max_age=int(state.config.console.session_hours * 3600),
            httponly=True,
            samesite="strict",
        )
        return response

    async def logout(request: Request) -> Response:
        caller = await require(request)
        form = await request.form()
        await check_csrf(request, caller, _text(form.get("csrf")))
        cookie = request.cookies.get(SESSION_COOKIE, "")
        await state.write([(sql.DELETE_SESSION, (auth.token_hash(cookie),))])
        response = RedirectResponse("/login", 303)
        response.delete_cookie(SESSION_COOKIE)
        return response

    # -- signals -------------------------------------------------------------------------------

    def signal_filter(request: Request, *, default_limit: int = 50) -> SignalFilter:
        params = request.query_params
        unknown = set(params) - {
            "station",
            "account",
            "code",
            "category",
            "flags",
            "limit",
            "after",
        }
        if unknown:
            raise Refusal(422, f"unknown filter: {', '.join(sorted(unknown))}")
        category = params.get("category") or None
        if category is not None and category not in {c.value for c in Category}:
            raise Refusal(
                422,
                f"unknown category {category!r}: one of {', '.join(c.value for c in Category)}",
            )
        limit = _int(params.get("limit"), "limit", default_limit)
        if not 1 <= limit <= MAX_LIMIT:
            raise Refusal(422, f"limit must be between 1 and {MAX_LIMIT}")
        after = _int(params.get("after"), "after", 0)
        flags = tuple(f.strip() for f in (params.get("flags") or "").split(",") if f.strip())
        return SignalFilter(
            station=params.get("station") or None,
            account=params.get("account") or None,
            code=params.get("code") or None,
            category=category,
            flags=flags,
            after_seq=max(after, 0),
            limit=limit,
        )

    async def summaries(query: SignalFilter) -> list[dict[str, Any]]:
        def read(tables: ConsoleTables) -> list[dict[str, Any]]:
            rows = tables.signal_rows(query)
            acks = tables.manual_acks([r["id"] for r in rows])
            out = []
            for row in rows:
                item = signal_summary(row)
                ack = acks.get(row["id"])
                item["handled_by"] = ack["user"] if ack else None
                out.append(item)
            return out

        return await state.reader.run(read)

    async def signal_full(signal_id: str) -> dict[str, Any]:
        manual = state.manual_outputs()
        outputs = await state.outputs()

        def read(tables: ConsoleTables) -> dict[str, Any] | None:
            row = tables.signal_row(signal_id)
            if row is None:
                return None
            detail = signal_detail(row)
            ack = tables.manual_ack(signal_id)
            detail["manual_ack"] = (
                {**ack, "acked_at": moment(ack["acked_us"])} if ack is not None else None
            )
            seq = int(row["seq"])
            suppressed = "suppressed" in detail["flags"]
            detail["deliveries"] = [
                {
                    "output": o["name"],
                    "state": "never sent (suppressed)"
                    if suppressed
                    else (
                        "delivered" if o["cursor"] is not None and seq <= o["cursor"] else "waiting"
                    ),
                }
                for o in outputs
            ]
            detail["waiting_for_manual"] = (
                sorted(n for n, c in manual.items() if seq > c)
                if detail["category"] == "alarm" and not suppressed
                else []
            )
            return detail

        detail = await state.reader.run(read)
        if detail is None:
            raise Refusal(404, f"no signal {signal_id!r}")
        return detail

    async def api_signals(request: Request) -> Response:
        await require(request)
        return JSONResponse({"signals": await summaries(signal_filter(request))})

    async def api_signal(request: Request) -> Response:
        await require(request)
        return JSONResponse(await signal_full(request.path_params["signal_id"]))

    async def acknowledge(request: Request, caller: Caller, signal_id: str) -> dict[str, Any]:
        detail = await signal_full(signal_id)
        if detail["manual_ack"] is not None:
            ack = detail["manual_ack"]
            raise Refusal(409, f"already acknowledged by {ack['user']} at {ack['acked_at']}")
        waiting = detail["waiting_for_manual"]
        if not waiting:
            raise Refusal(
                409,
                "this signal is not in the manual queue (only alarms waiting for an output "
                "in manual mode can be acknowledged here)",
            )
        at = now_us()
        await state.audit(
            caller.user.name,
            "acknowledge",
            signal_id,
            {"outputs": waiting, "account": detail["account"]},
            [(sql.INSERT_MANUAL_ACK, (signal_id, caller.user.name, at, ",".join(waiting)))],
        )
        return {"signal_id": signal_id, "acknowledged_by": caller.user.name, "at": moment(at)}

    async def api_acknowledge(request: Request) -> Response:
        caller = await require(request, "operator")
        body = await request.body()
        if body.strip():
            try:
                parsed = json.loads(body)
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise Refusal(422, "the body must be a JSON object (or empty)") from None
            if not isinstance(parsed, dict):
                raise Refusal(422, "the body must be a JSON object (or empty)")
        await check_csrf(request, caller, None)
        return JSONResponse(await acknowledge(request, caller, request.path_params["signal_id"]))

    async def page_acknowledge(request: Request) -> Response:
        caller = await require(request, "operator")
        form = await request.form()
        await check_csrf(request, caller, _text(form.get("csrf")))
        await acknowledge(request, caller, request.path_params["signal_id"])
        back = _text(form.get("back")) or "/manual"
        return RedirectResponse(
            back if back.startswith("/") and not back.startswith("//") else "/manual", 303
        )

    async def events(request: Request) -> Response:
        await require(request)
        query = signal_filter(request, default_limit=MAX_LIMIT)
        after = query.after_seq or await state.reader.run(lambda tables: tables.max_seq())

        async def stream() -> AsyncIterator[bytes]:
            nonlocal after
            yield b"retry: 1000\n\n"
            quiet = 0.0
            while True:
                with trio.move_on_after(0.5):
                    await state.service.journal.wait_committed()
                fresh = await summaries(attrs.evolve(query, after_seq=after))
                for item in reversed(fresh):
                    after = max(after, item["seq"])
                    yield f"id: {item['seq']}\nevent: signal\ndata: {json.dumps(item)}\n\n".encode()
                quiet = 0.0 if fresh else quiet + 0.5
                if quiet >= 15:
                    quiet = 0.0
                    yield b": keep-alive\n\n"

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    async def signals_page(request: Request) -> Response:
        caller = await require(request)
        query = signal_filter(request)
        return render(
            request,
            "signals.html",
            caller,
            signals=await summaries(query),
            query=query,
            categories=[c.value for c in Category],
            filters={k: v for k, v in request.query_params.items() if k != "limit"},
        )

    async def signal_page(request: Request) -> Response:
        caller = await require(request)
        detail = await signal_full(request.path_params["signal_id"])
        return render(request, "signal.html", caller, s=detail)

    # -- accounts, bridges, troubles, outputs ------------------------------------------------------

    async def account_rows(q: str | None) -> list[dict[str, Any]]:
        rows = await state.reader.run(lambda tables: Registry(tables.registry()).list_accounts())
        if q:
            needle = q.strip().upper()
            rows = [
                r
                for r in rows
                if needle in r["effective"].upper()
                or needle in r["number"].upper()
                or needle in (r["site"] or "").upper()
                or needle in (r["dealer"] or "").upper()
            ]
        return rows

    async def api_accounts(request: Request) -> Response:
        await require(request)
        return JSONResponse({"accounts": await account_rows(request.query_params.get("q"))})

    async def account_detail(station: str, effective: str) -> dict[str, Any]:
        index = state.service.registry.current()
        account = next(
            (
                a
                for a in index.accounts()
                if a.station == station and a.effective == effective.strip().upper()
            ),
            None,
        )
        if account is None:
            raise Refusal(404, f"no account {effective!r} on station {station!r}")
        link = account_link(account)

        def read(tables: ConsoleTables) -> dict[str, Any]:
            links = {r["link"]: r for r in tables.links()}
            bridges = [
                b
                for b in Registry(tables.registry()).list_bridges()
                if b["account"] == account.effective
            ]
            recent = [
                signal_summary(r)
                for r in tables.signal_rows(
                    SignalFilter(station=station, account=account.effective, limit=20)
                )
            ]
            return {"link": links.get(link), "bridges": bridges, "signals": recent}

        found = await state.reader.run(read)
        supervision = found["link"]
        return {
            "station": account.station,
            "line": account.line,
            "number": account.number,
            "effective": account.effective,
            "site": account.site_name,
            "dealer": account.dealer,
            "encrypted": account.key is not None,
            "supervision_s": account.supervision,
            "last_seen": moment(supervision["last_seen_us"]) if supervision else None,
            "trouble_open": bool(supervision["trouble_open"]) if supervision else False,
            "bridges": found["bridges"],
            "signals": found["signals"],
        }

    async def registry_write(write: Callable[[Registry], _T]) -> _T:
        """A registry change, its refusals as the CLI words them: unknown 404, taken 409
        (the holder named), anything else the registry refuses 422."""
        try:
            return await state.reader.run(lambda tables: write(Registry(tables.registry())))
        except NotFoundError as exc:
            raise Refusal(404, str(exc)) from None
        except CollisionError as exc:
            raise Refusal(409, str(exc)) from None
        except (RegistryError, ValueError) as exc:
            raise Refusal(422, str(exc)) from None

    async def json_object(request: Request) -> dict[str, Any]:
        """The request's JSON body, which must be an object (else 422)."""
        try:
            fields = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise Refusal(422, "the body must be a JSON object") from None
        if not isinstance(fields, dict):
            raise Refusal(422, "the body must be a JSON object")
        return fields

    async def add_account(caller: Caller, fields: dict[str, Any]) -> AccountCheck:
        """Add an account as `receiver accounts add` does: refused with the holder named."""
        unknown = set(fields) - {"station", "line", "number", "site", "supervision"}
        if unknown:
            raise Refusal(422, f"unknown field: {', '.join(sorted(unknown))}")
        station = fields.get("station")
        number = fields.get("number")
        if not isinstance(station, str) or not station.strip():
            raise Refusal(422, "station is required")
        if not isinstance(number, str) or not number.strip():
            raise Refusal(422, "number is required")
        for name in ("line", "site"):
            if fields.get(name) is not None and not isinstance(fields[name], str):
                raise Refusal(422, f"{name} must be text")
        supervision = fields.get("supervision")
        if supervision in ("", None):
            supervision = None
        else:
            try:
                supervision = float(supervision)
            except (TypeError, ValueError):
                raise Refusal(422, "supervision must be a number of seconds") from None
        try:
            spec = AccountSpec(
                line=fields.get("line") or "0",
                number=number,
                site=fields.get("site") or None,
                supervision=supervision,
            )
        except (TypeError, ValueError) as exc:
            raise Refusal(422, str(exc)) from None

        def write(registry: Registry) -> AccountCheck:
            return registry.add_account(station.strip(), spec)

        added = await registry_write(write)
        await state.audit(
            caller.user.name,
            "account_add",
            f"{added.station}/{added.effective}",
            {"line": added.line, "number": added.number, "site": spec.site},
        )
        return added

    async def api_add_account(request: Request) -> Response:
        caller = await require(request, "admin")
        fields = await json_object(request)
        await check_csrf(request, caller, None)
        added = await add_account(caller, fields)
        return JSONResponse(
            {
                "station": added.station,
                "line": added.line,
                "number": added.number,
                "effective": added.effective,
                "warnings": list(added.warnings),
                "attached_bridges": list(added.attached_bridges),
            },
            201,
        )

    async def page_add_account(request: Request) -> Response:
        caller = await require(request, "admin")
        form = await request.form()
        await check_csrf(request, caller, _text(form.get("csrf")))
        fields = {
            k: _text(form.get(k)) for k in ("station", "line", "number", "site", "supervision")
        }
        try:
            added = await add_account(caller, fields)
        except Refusal as exc:
            if exc.status not in (404, 409, 422):
                raise
            log.warning(
                "console_refused",
                status=exc.status,
                reason=exc.message,
                user=caller.user.name,
                path=request.url.path,
            )
            return render(
                request,
                "accounts.html",
                caller,
                status=exc.status,
                accounts=await account_rows(None),
                q="",
                refused=exc.message,
                form=fields,
            )
        target = f"/accounts/{quote(added.station, safe='')}/{quote(added.effective, safe='')}"
        return RedirectResponse(target, 303)

    async def edit_account(
        caller: Caller, station: str, effective: str, fields: dict[str, Any]
    ) -> AccountEdit:
        """Change an account as `receiver accounts edit` does: a new number or line is checked
        as `add` checks it, and a collision is refused with the holder named."""
        unknown = set(fields) - {"number", "line", "site", "supervision"}
        if unknown or not fields:
            what = ", ".join(sorted(unknown)) if unknown else "nothing to change"
            raise Refusal(422, f"unknown field: {what}" if unknown else what)
        for name in ("number", "line", "site"):
            if fields.get(name) is not None and not isinstance(fields[name], str):
                raise Refusal(422, f"{name} must be text")
        options: dict[str, Any] = {}
        if fields.get("number"):
            options["new_number"] = fields["number"]
        if fields.get("line"):
            options["new_line"] = fields["line"]
        if "site" in fields:
            options["site"] = fields["site"] or None
        if "supervision" in fields:
            value = fields["supervision"]
            try:
                options["supervision"] = None if value in ("", None) else float(value)
            except (TypeError, ValueError):
                raise Refusal(422, "supervision must be a number of seconds") from None
        current = await account_detail(station, effective)

        def write(registry: Registry) -> AccountEdit:
            return registry.edit_account(
                station, str(current["line"]), str(current["number"]), **options
            )

        edited = await registry_write(write)
        await state.audit(
            caller.user.name,
            "account_edit",
            f"{edited.station}/{edited.check.effective}",
            {"was": edited.was, **{k: v for k, v in fields.items() if k != "supervision"}},
        )
        await state.service.registry.refresh()
        return edited

    async def api_edit_account(request: Request) -> Response:
        caller = await require(request, "admin")
        fields = await json_object(request)
        await check_csrf(request, caller, None)
        p = request.path_params
        edited = await edit_account(caller, p["station"], p["number"], fields)
        return JSONResponse(
            {
                "station": edited.station,
                "was": edited.was,
                "effective": edited.check.effective,
                "line": edited.check.line,
                "number": edited.check.number,
                "detached_bridges": list(edited.detached_bridges),
                "attached_bridges": list(edited.attached_bridges),
            }
        )

    async def api_account(request: Request) -> Response:
        await require(request)
        p = request.path_params
        return JSONResponse(await account_detail(p["station"], p["number"]))

    async def accounts_page(request: Request) -> Response:
        caller = await require(request)
        q = request.query_params.get("q") or ""
        return render(
            request, "accounts.html", caller, accounts=await account_rows(q), q=q, form={}
        )

    async def page_edit_account(request: Request) -> Response:
        caller = await require(request, "admin")
        form = await request.form()
        await check_csrf(request, caller, _text(form.get("csrf")))
        p = request.path_params
        current = await account_detail(p["station"], p["number"])
        fields: dict[str, Any] = {}
        number = _text(form.get("number"))
        if number and number.strip().upper() != str(current["number"]).upper():
            fields["number"] = number
        site = _text(form.get("site"))
        if (site or None) != current["site"]:
            fields["site"] = site or None
        if not fields:
            return RedirectResponse(request.url.path, 303)
        try:
            edited = await edit_account(caller, p["station"], p["number"], fields)
        except Refusal as exc:
            if exc.status not in (404, 409, 422):
                raise
            log.warning(
                "console_refused",
                status=exc.status,
                reason=exc.message,
                user=caller.user.name,
                path=request.url.path,
            )
            return render(
                request, "account.html", caller, status=exc.status, a=current, refused=exc.message
            )
        station, effective = quote(edited.station, safe=""), quote(edited.check.effective, safe="")
        return RedirectResponse(f"/accounts/{station}/{effective}", 303)

    async def account_page(request: Request) -> Response:
        caller = await require(request)
        p = request.path_params
        return render(
            request, "account.html", caller, a=await account_detail(p["station"], p["number"])
        )

    async def bridges() -> list[dict[str, Any]]:
        offline_after = state.config.bridge.heartbeat_interval * state.config.bridge.heartbeat_grace

        def read(tables: ConsoleTables) -> list[dict[str, Any]]:
            rows = tables.bridge_report_rows(dealer=None, site=None)
            return bridge_report_rows(rows, offline_after=offline_after, now=datetime.now(UTC))

        try:
            return await state.reader.run(read)
        except NotFoundError as exc:
            raise Refusal(404, str(exc)) from None

    async def api_bridges(request: Request) -> Response:
        await require(request)
        return JSONResponse({"bridges": await bridges()})

    async def troubles() -> list[dict[str, Any]]:
        rows = await state.reader.run(lambda tables: tables.open_troubles())
        return [{"link": r["link"], "last_seen": moment(r["last_seen_us"])} for r in rows]

    async def api_troubles(request: Request) -> Response:
        await require(request)
        return JSONResponse({"troubles": await troubles()})

    async def api_outputs(request: Request) -> Response:
        await require(request)
        return JSONResponse({"outputs": await state.outputs()})

    async def manual_items() -> list[dict[str, Any]]:
        queue = await state.manual_queue()
        items = []
        for row, waiting in queue:
            item = signal_summary(row)
            item["waiting_for"] = waiting
            item["handled_by"] = row["manual_user"]
            item["handled_at"] = moment(row["manual_acked_us"])
            items.append(item)
        return items

    async def handled_items() -> list[dict[str, Any]]:
        rows = await state.reader.run(lambda tables: tables.recent_manual_acks(50))
        return [
            {
                **signal_summary(r),
                "handled_by": r["manual_user"],
                "handled_at": moment(r["manual_acked_us"]),
                "outputs": r["manual_outputs"].split(","),
            }
            for r in rows
        ]

    async def api_manual(request: Request) -> Response:
        await require(request)
        return JSONResponse({"queue": await manual_items(), "handled": await handled_items()})

    async def manual_page(request: Request) -> Response:
        caller = await require(request)
        return render(
            request,
            "manual.html",
            caller,
            queue=await manual_items(),
            handled=await handled_items(),
            outputs=await state.outputs(),
            manual_after=state.config.console.manual_after,
        )

    async def status() -> dict[str, Any]:
        counters = state.service.all_counters().snapshot()
        return {
            "node": state.node_state(),
            "listeners": state.listener_state(),
            "counters": counters,
            "outputs": await state.outputs(),
            "troubles": await troubles(),
            "bridges": await bridges(),
        }

    async def api_status(request: Request) -> Response:
        await require(request)
        return JSONResponse(await status())

    async def status_page(request: Request) -> Response:
        caller = await require(request)
        return render(request, "status.html", caller, st=await status())

    async def api_audit(request: Request) -> Response:
        await require(request, "admin")
        limit = _int(request.query_params.get("limit"), "limit", 100)
        if not 1 <= limit <= MAX_LIMIT:
            raise Refusal(422, f"limit must be between 1 and {MAX_LIMIT}")
        rows = await state.reader.run(lambda tables: tables.audit(limit))
        for row in rows:
            row["at"] = moment(row.pop("at_us"))
        return JSONResponse({"audit": rows})

    async def api_users(request: Request) -> Response:
        await require(request, "admin")
        rows = await state.reader.run(lambda tables: tables.users())
        return JSONResponse(
            {
                "users": [
                    {
                        "name": r["name"],
                        "role": r["role"],
                        "created": moment(r["created_us"]),
                        "disabled": bool(r["disabled"]),
                    }
                    for r in rows
                ]
            }
        )

    async def api_add_user(request: Request) -> Response:
        """Add a user, or set an existing user's role and password (ending their sessions)."""
        caller = await require(request, "admin")
        try:
            fields = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise Refusal(422, "the body must be a JSON object") from None
        if not isinstance(fields, dict) or set(fields) != {"name", "role", "password"}:
            raise Refusal(422, "give exactly name, role and password")
        name, role, password = fields["name"], fields["role"], fields["password"]
        if not isinstance(name, str) or not auth.valid_user_name(name):
            raise Refusal(422, "name must be 1-64 printable characters without spaces")
        if role not in auth.ROLES:
            raise Refusal(422, f"role must be one of {', '.join(auth.ROLES)}")
        if not isinstance(password, str) or len(password) < auth.MIN_PASSWORD:
            raise Refusal(422, f"password must have at least {auth.MIN_PASSWORD} characters")
        await check_csrf(request, caller, None)
        password_hash = await trio.to_thread.run_sync(auth.hash_password, password)
        await state.audit(
            caller.user.name,
            "user_add",
            name,
            {"role": role},
            [
                (sql.INSERT_USER, (name, role, password_hash, now_us())),
                (sql.DELETE_USER_SESSIONS, (name,)),
            ],
        )
        return JSONResponse({"name": name, "role": role}, 201)

    async def openapi(request: Request) -> Response:
        await require(request)
        return JSONResponse(OPENAPI)

    async def home(request: Request) -> Response:
        await require(request)
        return RedirectResponse("/signals", 303)

    async def api_unknown(request: Request) -> Response:
        await require(request)
        raise Refusal(404, f"no API endpoint {request.url.path}")

    static = StaticFiles(directory=str(resources.files("receiver.console").joinpath("static")))
    routes = [
        Route("/healthz", healthz),
        Route("/metrics", metrics),
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/", home),
        Route("/signals", signals_page),
        Route("/signals/{signal_id}", signal_page),
        Route("/signals/{signal_id}/acknowledge", page_acknowledge, methods=["POST"]),
        Route("/events/signals", events),
        Route("/accounts", accounts_page, methods=["GET"]),
        Route("/accounts", page_add_account, methods=["POST"]),
        Route("/accounts/{station}/{number}", account_page, methods=["GET"]),
        Route("/accounts/{station}/{number}", page_edit_account, methods=["POST"]),
        Route("/status", status_page),
        Route("/manual", manual_page),
        Route("/api/v1/openapi.json", openapi),
        Route("/api/v1/signals", api_signals),
        Route("/api/v1/signals/{signal_id}", api_signal),
        Route("/api/v1/signals/{signal_id}/acknowledge", api_acknowledge, methods=["POST"]),
        Route("/api/v1/accounts", api_accounts, methods=["GET"]),
        Route("/api/v1/accounts", api_add_account, methods=["POST"]),
        Route("/api/v1/accounts/{station}/{number}", api_account, methods=["GET"]),
        Route("/api/v1/accounts/{station}/{number}", api_edit_account, methods=["PATCH"]),
        Route("/api/v1/outputs", api_outputs),
        Route("/api/v1/bridges", api_bridges),
        Route("/api/v1/troubles", api_troubles),
        Route("/api/v1/manual", api_manual),
        Route("/api/v1/status", api_status),
        Route("/api/v1/audit", api_audit),
        Route("/api/v1/users", api_users, methods=["GET"]),
        Route("/api/v1/users", api_add_user, methods=["POST"]),
        Route("/api/{rest:path}", api_unknown),
        Mount("/static", static, name="static"),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={
            Refusal: refused,
            HTTPException: http_error,
            **{kind: store_down for kind in STORE_FAULTS},
        },
        middleware=[Middleware(PageHeaders), Middleware(BodyLimit)],
    )
    app.state.templates = templates
    return app


class BodyLimit:
    """Request bodies are small (a login form, an acknowledgement, an account): anything past
    ``MAX_BODY`` bytes is refused with 413 before it is read into memory."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length" and (not value.isdigit() or int(value) > MAX_BODY):
                too_big = JSONResponse({"error": f"request body over {MAX_BODY} bytes"}, 413)
                await too_big(scope, receive, send)
                return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > MAX_BODY:
                raise Refusal(413, f"request body over {MAX_BODY} bytes")
            return message

        await self.app(scope, counted, send)


class PageHeaders:
    """Headers on every answer: nothing from elsewhere runs in or frames a console page."""

    HEADERS = (
        (b"content-security-policy", b"default-src 'self'; frame-ancestors 'none'"),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"same-origin"),
    )

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *self.HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _int(text: str | None, name: str, default: int) -> int:
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise Refusal(422, f"{name} must be a whole number, got {text!r}") from None
