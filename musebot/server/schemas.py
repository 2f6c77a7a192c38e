"""JSON Schemas of every message the network API takes or gives, and the OpenAPI 3.1 document built from them.

One source for both: the validators that check each incoming message (HTTP bodies, WebSocket frames, OSC
arguments gathered into a settings object) and ``/openapi.json`` are made from the same dictionaries, so
the document cannot drift from what the server accepts. Schemas follow JSON Schema 2020-12, the dialect
of OpenAPI 3.1 (https://spec.openapis.org/oas/v3.1.0#schema-object).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence

import jsonschema

API_VERSION = "1.0.0"
MAX_BODY_BYTES = 16 * 1024  # an HTTP body; settings fit in a few hundred bytes
MAX_FRAME_BYTES = 4 * 1024  # a WebSocket text frame; one MIDI message fits in 40

_byte = {"type": "integer", "minimum": 0, "maximum": 255}
_pitch = {"type": "integer", "minimum": 0, "maximum": 127}


PART_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "channel": {"type": "integer", "minimum": 0, "maximum": 15},
        "mute": {"type": "boolean"},
        "solo": {"type": "boolean"},
        "density": {"type": "number", "minimum": 0, "maximum": 1, "description": "share of notes that sound"},
        "velocity_scale": {"type": "number", "minimum": 0, "maximum": 2},
    },
}


def settings_schema(modes: Sequence[str]) -> dict:
    """What ``PATCH /api/settings`` takes: any subset of the settings, nothing else."""
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "mode": {"type": "string", "enum": list(modes), "description": "interaction mode"},
            "bpm": {"type": "number", "minimum": 20, "maximum": 400, "description": "tempo (beats/min)"},
            "temperature": {"type": "number", "minimum": 0.05, "maximum": 5, "description": "sampling"},
            "answer_beats": {
                "type": ["number", "null"], "minimum": 1, "maximum": 64,
                "description": "answer length in beats; null: as long as the call",
            },
            "thru": {"type": "boolean", "description": "pass the musician's notes to the outputs"},
            "harmony": {
                "type": "object",
                "additionalProperties": False,
                "description": "accompany, looper: the chord chart the parts follow and what they follow",
                "properties": {
                    "chart": {
                        "type": ["string", "null"], "maxLength": 12000,
                        "description": "bars split by |, e.g. 'Dm7 | G7 | Cmaj7 | %' (played from now on, "
                                       "looping from bar 1); null: no chart",
                    },
                    "mode": {"enum": ["chart", "follow", "key"],
                             "description": "chart, follow (the chords the musician plays) or key only"},
                },
            },
            "parts": {
                "type": "object",
                "additionalProperties": False,
                "maxProperties": 16,
                "description": "the parts musebot plays: 'answer' (call mode: its channel) or the band's parts "
                               "(accompany, looper: mute, solo, density, velocity_scale)",
                "patternProperties": {"^[a-z][a-z0-9_]{0,31}$": PART_SCHEMA},
            },
            "constraints": {
                "type": "object",
                "additionalProperties": False,
                "description": "limits on the model's answers (the model answerer only)",
                "properties": {
                    "pitch_range": {
                        "type": "array", "items": _pitch, "minItems": 2, "maxItems": 2,
                        "description": "lowest and highest MIDI pitch, inclusive",
                    },
                    "pitch_classes": {
                        "type": ["array", "null"],
                        "items": {"type": "integer", "minimum": 0, "maximum": 11},
                        "minItems": 1, "maxItems": 12, "uniqueItems": True,
                        "description": "allowed pitch classes (0 = C); null: all",
                    },
                },
            },
        },
    }


STATUS_SCHEMA = {
    "type": "object",
    "required": ["mode", "bpm", "answerer", "state", "telemetry", "clients"],
    "properties": {
        "mode": {"type": "string"},
        "bpm": {"type": "number"},
        "tempo": {
            "type": "object",
            "description": "the tempo in use: followed from the musician (--tempo follow, with the tracker's "
                           "confidence 0..1) or the fixed --bpm",
            "properties": {"bpm": {"type": "number"}, "source": {"enum": ["follow", "fixed"]},
                           "confidence": {"type": ["number", "null"]}},
        },
        "answerer": {"type": "string"},
        "model": {"type": ["string", "null"]},
        "state": {"type": "string"},
        "midi_system": {"type": "boolean"},
        "uptime_s": {"type": "number"},
        "settings": {"type": "object"},
        "telemetry": {
            "type": "object",
            "properties": {
                "sent": {"type": "integer"},
                "late": {"type": "integer"},
                "dropped_late": {"type": "integer"},
                "cancelled": {"type": "integer"},
                "max_late_ms": {"type": "number"},
                "scheduling_error_ms": {
                    "type": "object",
                    "properties": {"n": {"type": "integer"}, "p50": {"type": ["number", "null"]},
                                   "p99": {"type": ["number", "null"]}},
                },
                "generation": {"type": ["object", "null"]},
                "counts": {"type": "object"},
                "network_input_dropped": {"type": "integer"},
                "overflows": {
                    "type": "object",
                    "description": "what was dropped or forgotten to stay bounded: input_overflows (input queue "
                                   "full), input_sysex_cut (a sysex with no end held the input deaf for "
                                   "a moment), backlog_dropped (musician messages the model thread shed, newest "
                                   "kept), tracker_trimmed, held_key_timeouts, recorder_dropped, "
                                   "log_lines_suppressed",
                    "additionalProperties": {"type": "integer"},
                },
            },
        },
        "clients": {
            "type": "object",
            "properties": {"observers": {"type": "integer"}, "performer": {"type": "boolean"}},
        },
        "band": {
            "type": ["object", "null"],
            "description": "accompany and looper modes: clock, key, parts and their telemetry (else null)",
        },
    },
}

ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string"}, "details": {"type": "string"}},
}

PANIC_SCHEMA = {
    "type": "object",
    "required": ["ok", "panics"],
    "properties": {"ok": {"type": "boolean"}, "panics": {"type": "integer"}},
}

# WebSocket frames from a client: one JSON object each, told apart by "type".
CLIENT_MESSAGE_SCHEMA = {
    "oneOf": [
        {
            "type": "object", "additionalProperties": False, "required": ["type", "role"],
            "properties": {"type": {"const": "hello"}, "role": {"enum": ["performer", "observer"]}},
        },
        {
            "type": "object", "additionalProperties": False, "required": ["type", "data"],
            "properties": {
                "type": {"const": "midi"},
                "data": {"type": "array", "items": _byte, "minItems": 1, "maxItems": 3},
                "id": {"type": "integer", "minimum": 0, "maximum": 2**53},
            },
        },
        {
            "type": "object", "additionalProperties": False, "required": ["type"],
            "properties": {"type": {"const": "panic"}},
        },
        {
            "type": "object", "additionalProperties": False, "required": ["type"],
            "properties": {"type": {"const": "ping"}, "id": {"type": "integer", "minimum": 0, "maximum": 2**53}},
        },
    ],
}


class BadJson(ValueError):
    """A body or frame that is not strict JSON (syntax, NaN/Infinity, nesting too deep)."""


def _no_constant(name: str) -> float:
    raise BadJson(f"{name} is not a JSON number")


MAX_NESTING = 32  # deeper than any message of ours; the schemas refuse what is deeper anyway
_STRING = {str: re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL), bytes: re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)}
_BRACKET = {str: re.compile(r"[\[\]{}]"), bytes: re.compile(rb"[\[\]{}]")}
_OPENING = {"[", "{", b"[", b"{"}


def nesting(text: str | bytes) -> int:
    """How deep the arrays and objects of JSON ``text`` nest (brackets inside strings do not count)."""
    brackets = _BRACKET[type(text)].findall(_STRING[type(text)].sub("" if isinstance(text, str) else b"", text))
    depth = deepest = 0
    for bracket in brackets:
        depth += 1 if bracket in _OPENING else -1
        deepest = max(deepest, depth)
    return deepest


def parse_json(text: str | bytes) -> object:
    """Strict JSON: NaN and Infinity (which Python's json takes) would pass every ``minimum``/``maximum``
    check of a schema; nesting deeper than ``MAX_NESTING`` is refused before it is parsed.

    Python's json parser recurses in C once per level, up to the interpreter's recursion limit, which a test
    library or another thread may have raised: 1,300 nested ``[`` took a server thread to that limit, and a
    garbage-collector callback run there ended the process ("Cannot recover from stack overflow")."""
    opening = text.count("[") + text.count("{") if isinstance(text, str) else text.count(b"[") + text.count(b"{")
    if opening > MAX_NESTING and nesting(text) > MAX_NESTING:  # (fewer brackets cannot nest deeper)
        raise BadJson(f"nested deeper than {MAX_NESTING} levels")
    try:
        return json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise BadJson("nested too deeply") from None
    except BadJson:
        raise
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadJson(str(exc)[:200]) from None


def non_finite(instance: object, where: str = "message", depth: int = 0) -> str | None:
    """Where ``instance`` holds a NaN or an infinity (OSC floats, a JSON number like 1e400), else None."""
    if isinstance(instance, float) and not math.isfinite(instance):
        return where
    if depth > MAX_NESTING:  # parse_json refuses deeper JSON; the schemas refuse what is deeper anyway
        return None
    items = instance.items() if isinstance(instance, dict) else enumerate(instance) \
        if isinstance(instance, (list, tuple)) else ()
    for key, value in items:
        found = non_finite(value, f"{where}/{key}" if where != "message" else str(key), depth + 1)
        if found:
            return found
    return None


class Validator:
    """A compiled schema whose :meth:`check` returns None for a valid instance, else a one-line reason.

    NaN and infinities are refused before the schema: NaN passes every ``minimum``/``maximum`` (each
    comparison is false), and one in the settings would make ``/api/settings`` invalid JSON."""

    def __init__(self, schema: dict) -> None:
        jsonschema.Draft202012Validator.check_schema(schema)
        self._validator = jsonschema.Draft202012Validator(schema)

    def check(self, instance: object) -> str | None:
        where = non_finite(instance)
        if where:
            return f"{where}: not a finite number (NaN and infinity are refused)"[:300]
        error = jsonschema.exceptions.best_match(self._validator.iter_errors(instance))
        if error is None:
            return None
        where = "/".join(str(p) for p in error.absolute_path) or "message"
        return f"{where}: {error.message}"[:300]


def _json(schema: dict) -> dict:
    return {"application/json": {"schema": schema}}


def openapi_document(modes: Sequence[str], token_required: bool) -> dict:
    """The OpenAPI 3.1 description of the HTTP part of the API (the WebSocket is described in prose)."""
    errors = {
        "401": {"description": "missing or wrong token", "content": _json({"$ref": "#/components/schemas/Error"})},
        "403": {"description": "cross-origin request (a page of another site, or Origin: null)",
                "content": _json({"$ref": "#/components/schemas/Error"})},
        "421": {"description": "Host not served here (add it with --allow-host)",
                "content": _json({"$ref": "#/components/schemas/Error"})},
        "429": {"description": "too many requests", "content": _json({"$ref": "#/components/schemas/Error"})},
    }
    security = [{"bearer": []}, {"tokenHeader": []}] if token_required else []
    document = {
        "openapi": "3.1.0",
        "info": {
            "title": "musebot API",
            "version": API_VERSION,
            "description": (
                "Control and telemetry of a running `musebot serve`. A WebSocket at /ws streams MIDI in "
                "(JSON frames {\"type\": \"midi\", \"data\": [status, data1, data2]} after "
                "{\"type\": \"hello\", \"role\": \"performer\"}; one performer at a time) and streams out "
                "every event musebot plays and the notes it plans ahead. With a token, send it as "
                "`Authorization: Bearer TOKEN`, `X-Musebot-Token: TOKEN`, or `?token=TOKEN` on /ws."
            ),
        },
        "paths": {
            "/api/status": {
                "get": {
                    "operationId": "getStatus",
                    "summary": "mode, tempo, model and the scheduler's telemetry",
                    "responses": {
                        "200": {"description": "status", "content": _json({"$ref": "#/components/schemas/Status"})},
                        **errors,
                    },
                },
            },
            "/api/settings": {
                "get": {
                    "operationId": "getSettings",
                    "summary": "the current settings",
                    "responses": {
                        "200": {"description": "settings", "content": _json({"$ref": "#/components/schemas/Settings"})},
                        **errors,
                    },
                },
                "patch": {
                    "operationId": "changeSettings",
                    "summary": "change some settings (a mode change panics first)",
                    "requestBody": {"required": True, "content": _json({"$ref": "#/components/schemas/Settings"})},
                    "responses": {
                        "200": {"description": "the settings now",
                                "content": _json({"$ref": "#/components/schemas/Settings"})},
                        "400": {"description": "not valid JSON or not valid settings",
                                "content": _json({"$ref": "#/components/schemas/Error"})},
                        "409": {"description": "a setting the running answerer cannot take",
                                "content": _json({"$ref": "#/components/schemas/Error"})},
                        "413": {"description": "body too large",
                                "content": _json({"$ref": "#/components/schemas/Error"})},
                        "415": {"description": "body is not application/json",
                                "content": _json({"$ref": "#/components/schemas/Error"})},
                        **errors,
                    },
                },
            },
            "/api/panic": {
                "post": {
                    "operationId": "panic",
                    "summary": "stop the answer and release every note on every output and channel",
                    "responses": {
                        "200": {"description": "done", "content": _json({"$ref": "#/components/schemas/Panic"})},
                        "415": {"description": "a body of a type a web page may send to any site (text/plain, "
                                               "a form): send no body, or application/json",
                                "content": _json({"$ref": "#/components/schemas/Error"})},
                        **errors,
                    },
                },
            },
        },
        "components": {
            "schemas": {
                "Settings": settings_schema(modes),
                "Status": STATUS_SCHEMA,
                "Error": ERROR_SCHEMA,
                "Panic": PANIC_SCHEMA,
            },
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "tokenHeader": {"type": "apiKey", "in": "header", "name": "X-Musebot-Token"},
            },
        },
    }
    if security:
        document["security"] = security
    return document
