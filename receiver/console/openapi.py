"""The OpenAPI document served at ``/api/v1/openapi.json`` (kept by hand beside the routes)."""

from __future__ import annotations

from typing import Any

_ERROR = {
    "description": "refused",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}
_REFUSALS = {
    "401": {**_ERROR, "description": "not logged in, expired session or unknown token"},
    "403": {
        **_ERROR,
        "description": "the user's role does not allow it, or a CSRF token is missing",
    },
    "422": {**_ERROR, "description": "malformed query or body"},
}


def _query(name: str, description: str, kind: str = "string") -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": {"type": kind},
    }


def _path(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def _get(
    summary: str, parameters: list[dict[str, Any]] | None = None, not_found: bool = False
) -> dict[str, Any]:
    responses: dict[str, Any] = {
        "200": {"description": "ok", "content": {"application/json": {}}},
        **_REFUSALS,
    }
    if not_found:
        responses["404"] = {**_ERROR, "description": "not found"}
    return {"get": {"summary": summary, "parameters": parameters or [], "responses": responses}}


OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "Alarm receiver console API",
        "version": "1",
        "description": (
            "Authenticate with a login session (cookie; changes need the X-CSRF-Token header) "
            "or an API token from `receiver users token NAME` (Authorization: Bearer TOKEN). "
            "Viewers read; operators also acknowledge; admins also read the audit trail."
        ),
    },
    "components": {
        "securitySchemes": {
            "token": {"type": "http", "scheme": "bearer"},
            "session": {"type": "apiKey", "in": "cookie", "name": "receiver_session"},
        },
        "schemas": {
            "Error": {
                "type": "object",
                "properties": {"error": {"type": "string"}},
                "required": ["error"],
            }
        },
    },
    "security": [{"token": []}, {"session": []}],
    "paths": {
        "/api/v1/signals": _get(
            "Signals, newest first",
            [
                _query("station", "station name"),
                _query("account", "account number (effective or as received)"),
                _query("code", "Contact ID or SIA code"),
                _query("category", "alarm, supervisory, trouble, open_close, bypass, test, other"),
                _query("flags", "comma-separated flags every signal must carry"),
                _query("after", "only signals committed after this journal sequence", "integer"),
                _query("limit", "1 to 500 (default 50)", "integer"),
            ],
        ),
        "/api/v1/signals/{signal_id}": _get(
            "Everything the journal holds about one signal, with its deliveries",
            [_path("signal_id")],
            not_found=True,
        ),
        "/api/v1/signals/{signal_id}/acknowledge": {
            "post": {
                "summary": "Acknowledge an alarm in the manual queue (operator or admin)",
                "parameters": [_path("signal_id")],
                "requestBody": {
                    "required": False,
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
                "responses": {
                    "200": {"description": "acknowledged; journaled with the user's name"},
                    **_REFUSALS,
                    "404": {**_ERROR, "description": "no such signal"},
                    "409": {
                        **_ERROR,
                        "description": "not in the manual queue, or already acknowledged",
                    },
                },
            }
        },
        "/api/v1/accounts": {
            **_get("Registry accounts", [_query("q", "search number, site or dealer")]),
            "post": {
                "summary": "Add an account (admin); refused with the holder named on a collision",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["station", "number"],
                                "properties": {
                                    "station": {"type": "string"},
                                    "line": {"type": "string"},
                                    "number": {"type": "string"},
                                    "site": {"type": "string"},
                                    "supervision": {"type": "number"},
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "201": {"description": "added; journaled with the user's name"},
                    **_REFUSALS,
                    "404": {**_ERROR, "description": "unknown station or site"},
                    "409": {**_ERROR, "description": "the number is taken: the holder is named"},
                },
            },
        },
        "/api/v1/accounts/{station}/{number}": {
            **_get(
                "One account: registry entry, supervision, bridges, recent signals",
                [_path("station"), _path("number")],
                not_found=True,
            ),
            "patch": {
                "summary": "Change an account's number, line, site or supervision (admin); a "
                "new number taken by another account is refused (409) with the holder named",
                "parameters": [_path("station"), _path("number")],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "number": {"type": "string"},
                                    "line": {"type": "string"},
                                    "site": {"type": ["string", "null"]},
                                    "supervision": {"type": ["number", "null"]},
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "200": {"description": "changed; journaled with the admin's name"},
                    **_REFUSALS,
                },
            },
        },
        "/api/v1/outputs": _get(
            "Outputs: connected, backlog, oldest undelivered, last error, manual mode"
        ),
        "/api/v1/bridges": _get("Bridges report: online state, arming, troubles"),
        "/api/v1/troubles": _get("Open supervision troubles"),
        "/api/v1/manual": _get("The manual queue and the alarms handled by hand"),
        "/api/v1/status": _get("Listeners, counters, outputs, troubles, bridges"),
        "/api/v1/audit": _get(
            "Changes made through the console (admin)", [_query("limit", "1 to 500", "integer")]
        ),
        "/api/v1/users": {
            **_get("The console's users (admin)"),
            "post": {
                "summary": "Add a user or set their role and password (admin); ends their sessions",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["name", "role", "password"],
                                "properties": {
                                    "name": {"type": "string"},
                                    "role": {"enum": ["admin", "operator", "viewer"]},
                                    "password": {"type": "string", "minLength": 8},
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "201": {"description": "saved; journaled with the admin's name"},
                    **_REFUSALS,
                },
            },
        },
    },
}
