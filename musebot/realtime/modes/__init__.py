"""The modes of ``musebot serve``, each a :class:`~musebot.realtime.modes.base.Session`.

* ``call`` and ``listen`` (:mod:`.call`, its answerers in :mod:`.answers` and :mod:`.call_worker`);
* ``accompany`` (:mod:`.accompany`) and ``looper`` (:mod:`.looper`), which share :mod:`.band`.

:func:`make_session` is the one place that knows them all; a mode never imports another.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from musebot.realtime.config import ServeConfig
from musebot.realtime.errors import RealtimeError
from musebot.realtime.io.outputs import Output
from musebot.realtime.io.recorder import SessionRecorder
from musebot.realtime.modes.answers import AnswerSlot, EchoAnswerer
from musebot.realtime.modes.band import BAND_MODES, BandConfig
from musebot.realtime.modes.base import Session, SessionError, load_engine
from musebot.realtime.modes.call import MODES as CALL_MODES
from musebot.realtime.scheduler import Scheduler

log = logging.getLogger(__name__)

SERVE_MODES = tuple(CALL_MODES) + BAND_MODES  # every --mode of ``musebot serve`` (the network API's list)

__all__ = ["SERVE_MODES", "Session", "SessionError", "make_session"]


def make_session(mode: str, config: ServeConfig, scheduler: Scheduler, outputs: Sequence[Output],
                 slot: AnswerSlot | None = None, recorder: SessionRecorder | None = None, model: str | None = None,
                 answer: str | None = None, band: BandConfig | None = None, api: int | None = None) -> Session:
    """The session a ``musebot serve --mode MODE`` asks for, with its answerer or band and its model."""
    if mode not in SERVE_MODES:
        raise ValueError(f"--mode must be one of {', '.join(SERVE_MODES)}, got {mode!r}")
    if mode in BAND_MODES:
        band = band or BandConfig.for_mode(mode)
        band.mode = mode
        band.validate()
        from musebot.realtime.constraints import LiveSettings

        settings = LiveSettings.for_parts(band.parts, band.parts_config)
        engine = load_engine(model, config.precision) if model else None
        if mode == "accompany":
            if engine is None:
                raise RealtimeError("--mode accompany needs --model DIR (the parts come from the model)")
            from musebot.realtime.modes.accompany import Accompanist

            session: Session = Accompanist(engine, config, band, scheduler, outputs, settings, api)
        else:
            from musebot.realtime.modes.looper import Looper

            session = Looper(config, band, scheduler, outputs, settings, engine, api)
        session.recorder = recorder
        return session
    from musebot.realtime.modes.call import Duet

    if slot is None:
        raise ValueError("a call session plays its answers through an AnswerSlot")

    kind = answer or ("model" if model else "echo")
    if kind == "echo":
        log.info("answering by echo: musebot plays your phrase back (no model loaded)")
        answerer = EchoAnswerer(slot)
    elif kind != "model":
        raise ValueError(f"--answer must be 'model' or 'echo', got {kind!r}")
    elif not model:
        raise ValueError("--answer model needs --model DIR (an exported model folder)")
    else:
        from musebot.realtime.modes.call_worker import ModelAnswerer

        answerer = ModelAnswerer(load_engine(model, config.precision), slot, config)
    return Duet(config, scheduler, outputs, slot, answerer, recorder, mode)
