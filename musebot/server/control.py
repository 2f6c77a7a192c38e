"""What the network API can read and change in a running :class:`~musebot.realtime.daemon.Daemon`.

Shared by HTTP, WebSocket and OSC, so the three cannot disagree. It talks to the daemon's session only
through the :class:`~musebot.realtime.modes.base.Session` interface, under the daemon's session lock (the
listener thread owns the session). Changes are all-or-nothing: everything that can be refused is checked
before anything is changed.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from musebot.realtime.clock import now

if TYPE_CHECKING:
    from musebot.realtime.daemon import Daemon


class SettingsError(ValueError):
    """A setting refused: ``status`` is the HTTP status that says why (400 invalid, 409 not possible now)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def modes() -> tuple[str, ...]:
    """Every ``--mode`` of ``musebot serve``, as the daemon lists them (a session may refuse to switch
    between some of them live: the refusal says why)."""
    from musebot.realtime.modes import SERVE_MODES

    return tuple(SERVE_MODES)


class Control:
    """Status, settings and panic of one daemon (any thread; quick)."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.network_input_dropped = 0
        # Constraints set through the API: the worker takes a new mask table on its own thread, a moment
        # later, so the settings report what was asked for rather than a table not swapped in yet.
        self.constraints: dict = {}

    # ---- reading -------------------------------------------------------------------------------------
    def settings(self) -> dict:
        d = self.daemon
        settings = {
            "mode": d.session.mode,
            "bpm": d.config.bpm,
            "temperature": d.config.temperature,
            "answer_beats": d.config.answer_beats,
            "thru": d.config.thru,
            "parts": {"answer": {"channel": d.slot.channel}},
            "constraints": {},
        }
        harmony = d.session.harmony_status()
        if harmony is not None:
            settings["harmony"] = {"mode": harmony["mode"], "chart": harmony["chart"]}
        band = d.session.part_settings()
        if band is not None:
            for name, part in band.parts.items():
                settings["parts"][name] = {"channel": part.channel, "mute": part.mute, "solo": part.solo,
                                           "density": part.density, "velocity_scale": part.velocity_scale}
        current = d.session.constraints()
        if current is not None:
            constraints = {"pitch_range": current.pitch_range,
                           "pitch_classes": current.pitch_classes, **self.constraints}
            if constraints["pitch_range"] is not None:
                settings["constraints"]["pitch_range"] = list(constraints["pitch_range"])
            classes = constraints["pitch_classes"]
            settings["constraints"]["pitch_classes"] = sorted(classes) if classes is not None else None
        return settings

    def status(self, clients: dict | None = None) -> dict:
        """Mode, tempo, model, and the telemetry of spec ``realtime-field.md`` §5.4 (scheduling error
        p50/p99 = ``sent - due`` of the latest sent messages, late and dropped notes, generation headroom)."""
        d = self.daemon
        stats = d.scheduler.stats
        errors = _snapshot(stats.errors)
        error_ms = {"n": len(errors), "p50": None, "p99": None}
        if errors:
            p50, p99 = np.percentile(np.asarray(errors) * 1e3, [50, 99])
            error_ms.update(p50=round(float(p50), 4), p99=round(float(p99), 4))
        session = d.session
        return {
            "mode": session.mode,
            "bpm": d.config.bpm,
            "tempo": session.tempo(),  # in use: followed from the musician or the fixed --bpm
            "answerer": session.name,
            "model": Path(d.options.model).name if d.options.model else None,
            "state": session.state,
            "midi_system": d.api is not None,
            "uptime_s": round(now() - d.started_at, 3),
            "settings": self.settings(),
            "telemetry": {
                "sent": stats.sent, "late": stats.late, "dropped_late": stats.dropped_late,
                "cancelled": stats.cancelled, "max_late_ms": round(stats.max_late_s * 1e3, 4),
                "scheduling_error_ms": error_ms,
                "generation": session.generation(),
                "counts": dict(session.counts),
                "network_input_dropped": self.network_input_dropped,
                "overflows": d.overflows(),
            },
            "clients": clients or {"observers": 0, "performer": False},
            "band": session.band_status(),
        }

    # ---- changing ------------------------------------------------------------------------------------
    def apply(self, changes: dict) -> dict:
        """Apply validated ``changes`` (see ``schemas.settings_schema``); returns the settings now."""
        d = self.daemon
        session = d.session
        constraints = changes.get("constraints")
        if constraints:
            current = session.constraints()
            if current is None:
                raise SettingsError(
                    f"constraints shape the model's answers; the {session.name!r} answerer has none "
                    "(serve with --model DIR)", 409,
                )
            kwargs: dict = {}
            if "pitch_range" in constraints:
                low, high = constraints["pitch_range"]
                if low > high:
                    raise SettingsError(f"constraints/pitch_range: lowest {low} is above highest {high}")
                kwargs["pitch_range"] = (low, high)
            if "pitch_classes" in constraints:
                classes = constraints["pitch_classes"]
                kwargs["pitch_classes"] = frozenset(classes) if classes is not None else None
            now_set = {"pitch_range": current.pitch_range,
                       "pitch_classes": current.pitch_classes, **self.constraints, **kwargs}
            low, high = now_set["pitch_range"] or (0, 127)
            classes = now_set["pitch_classes"]
            # The mask table accepts an empty pitch set and the engine would then have nothing to sample.
            if classes is not None and not any(p % 12 in classes for p in range(low, high + 1)):
                raise SettingsError(f"constraints: no allowed pitch class lies in {low}..{high}", 409)
        parts = changes.get("parts") or {}
        band = session.part_settings()
        for name, values in parts.items():
            if name == "answer":
                if set(values) - {"channel"}:
                    raise SettingsError("parts/answer: only its channel can be set", 409)
            elif band is None or name not in band.parts:
                known = ", ".join(["answer"] + sorted(band.parts if band else []))
                raise SettingsError(f"parts/{name}: no such part in this session (parts: {known})", 409)
            elif "channel" in values:
                raise SettingsError(f"parts/{name}: a band part's channel is set at start (--parts-config)", 409)
        mode = changes.get("mode")
        if mode is not None and mode not in modes():
            raise SettingsError(f"mode must be one of {', '.join(modes())}, got {mode!r}")
        harmony = changes.get("harmony")
        chart = None
        if harmony:
            chart = self._chart(harmony)
        with d.session_lock:
            if harmony:  # first: a refusal here leaves everything as it was
                try:
                    session.set_harmony(now(), chart, harmony.get("mode"),
                                        clear_chart="chart" in harmony and harmony["chart"] is None)
                except ValueError as exc:
                    raise SettingsError(f"harmony: {exc}") from exc
            if mode is not None and mode != session.mode:
                try:
                    session.set_mode(now(), mode)
                except ValueError as exc:  # call/listen and the band modes do not switch into each other
                    raise SettingsError(f"this session cannot switch to {mode!r} live ({exc}); restart "
                                        f"musebot serve with --mode {mode}", 409) from exc
            if constraints:
                from musebot.engine.masks import ConstraintError

                try:
                    session.set_constraints(**{**self.constraints, **kwargs})
                except ConstraintError as exc:  # e.g. no pitch class inside the range: nothing could play
                    raise SettingsError(f"constraints: {exc}", 409) from exc
                self.constraints.update(kwargs)
            if "bpm" in changes:
                d.config.bpm = float(changes["bpm"])
                session.set_tempo(d.config.bpm)
            if "temperature" in changes:
                d.config.temperature = float(changes["temperature"])
                session.set_temperature(d.config.temperature)
            if "answer_beats" in changes:
                beats = changes["answer_beats"]
                d.config.answer_beats = None if beats is None else float(beats)
            if "thru" in changes:
                d.config.thru = bool(changes["thru"])
            for name, values in parts.items():
                if name != "answer" and values:
                    with band.lock:  # one reference swap: the band reads its parts without waiting
                        band.parts[name] = replace(band.parts[name], **values)
            channel = parts.get("answer", {}).get("channel")
            if channel is not None:
                # Notes already scheduled keep their channel (their note-offs were built with them).
                d.slot.channel = channel
                d.config.answer_channel = channel
        return self.settings()

    def _chart(self, harmony: dict):
        """The chart a ``harmony`` change sets (None when it sets none); 400 naming a bad symbol's place."""
        from musebot.realtime.chords import ChartError, ChordSyntaxError, parse_chart

        status = self.daemon.session.harmony_status()
        if status is None:
            raise SettingsError("harmony: chord charts are for the band: serve with --mode accompany or "
                                "--mode looper", 409)
        if harmony.get("chart") is None:
            return None
        try:
            return parse_chart(harmony["chart"], status["beats_per_bar"])
        except (ChordSyntaxError, ChartError) as exc:
            raise SettingsError(f"harmony/chart: {exc}") from exc

    def panic(self, reason: str) -> int:
        """Release every note on every output and channel; returns the daemon's panic count."""
        d = self.daemon
        with d.session_lock:
            d.session.panic(now(), reason, all_channels=True)
            return d.session.counts["panics"]

    def feed(self, msg: tuple[int, ...]) -> bool:
        """A MIDI message from the network, handled like one from the MIDI input."""
        if self.daemon.feed(msg):
            return True
        self.network_input_dropped += 1
        return False


def _snapshot(values) -> list:
    """A copy of a deque another thread appends to (a copy during an append may raise; try again)."""
    for _ in range(5):
        try:
            return list(values)
        except RuntimeError:
            continue
    return []
