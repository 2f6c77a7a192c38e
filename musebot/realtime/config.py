"""Settings of the real-time daemon in typed dataclasses; CLI flags of ``musebot serve`` map onto them.

Defaults are gathered from the field (spec ``realtime-field.md`` §3.3): a phrase ends after about a beat of
silence with nothing held (magenta_midi waits a bar, Continuator-py 1 s); the answer is as long as the call
(magenta_midi), capped; note-ons more than 100 ms late are dropped rather than bunched (Aria demo).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class ControlConfig:
    """MIDI CC numbers the musician can turn (any channel); ``None`` switches a control off.

    ``temperature`` maps 0..127 linearly onto 0.1..2.0 (magenta_midi's range); ``answer_length`` maps
    0..127 onto 1..``max_answer_beats`` beats, 0 meaning "as long as the call"; ``panic`` fires on a value
    >= 64; ``takeover`` ends the phrase at once on a value >= 64 (the musician hands over).
    """

    temperature: int | None = 21
    answer_length: int | None = 22
    panic: int | None = 23
    takeover: int | None = 24


@dataclass
class ServeConfig:
    """Everything ``musebot serve`` and ``musebot demo`` need besides ports and the model."""

    bpm: float = 120.0  # with tempo="follow", the tracker's first guess
    # "follow": the beat tracker (realtime/tempo.py) hears the musician's tempo and phase, and the answer is
    # on their grid; "fixed": --bpm is the grid (what a program embedding musebot gets unless it asks;
    # ``musebot serve`` follows by default).
    tempo: str = "fixed"
    answer_on: str = "beat"  # follow: the answer starts on the next beat (or downbeat, "bar") after the silence
    silence_beats: float = 1.0  # phrase end: this much silence with no key and no sustain pedal held
    silence_ms: float | None = None  # if set, overrides silence_beats
    answer_beats: float | None = None  # None: as long as the call
    max_answer_beats: float = 16.0
    min_answer_beats: float = 1.0
    takeover_lead_ms: float = 10.0  # on the takeover controller the answer is due this long after it
    temperature: float = 1.0
    top_p: float = 0.98
    top_k: int = 20
    seed: int = 0
    answer_channel: int = 0
    thru: bool = False
    late_ms: float = 2.0  # a message sent later than this counts as late (and is logged)
    drop_late_ms: float = 100.0  # a note-on later than this is dropped with its note-off
    input_queue: int = 4096  # messages waiting for the listener; beyond this the input is dropped and counted
    speculate_events: int = 64  # events pre-generated while the musician plays
    held_key_timeout_s: float = 30.0  # a key or pedal held longer is forgotten (a lost note-off); 0: never
    precision: str | None = None  # the model's graphs: fp32, fp16, int8, int4; None: the best for the provider
    controls: ControlConfig = field(default_factory=ControlConfig)

    @property
    def seconds_per_beat(self) -> float:
        return 60.0 / self.bpm

    @property
    def silence_s(self) -> float:
        if self.silence_ms is not None:
            return self.silence_ms / 1000.0
        return self.silence_beats * self.seconds_per_beat

    def validate(self) -> None:
        """Raise ValueError with a message naming the bad setting."""
        if not 20 <= self.bpm <= 400:
            raise ValueError(f"--bpm must be between 20 and 400, got {self.bpm}")
        if self.tempo not in ("follow", "fixed"):
            raise ValueError(f"--tempo must be follow or fixed, got {self.tempo!r}")
        if self.answer_on not in ("beat", "bar"):
            raise ValueError(f"--answer-on must be beat or bar, got {self.answer_on!r}")
        if self.precision not in (None, "fp32", "fp16", "int8", "int4"):
            raise ValueError(f"--precision must be fp32, fp16, int8 or int4, got {self.precision!r}")
        if self.silence_s <= 0:
            raise ValueError("the phrase-end silence must be positive (--silence-beats or --silence-ms)")
        if not 0 <= self.answer_channel <= 15:
            raise ValueError(f"--answer-channel must be 0..15, got {self.answer_channel}")
        if not 0.05 <= self.temperature <= 5:
            raise ValueError(f"--temperature must be in 0.05..5, got {self.temperature}")
        if self.max_answer_beats <= 0:
            raise ValueError("--max-answer-beats must be positive")
        if not 0 <= self.held_key_timeout_s <= 3600:  # NaN fails too
            raise ValueError(f"--held-key-timeout must be 0 (off) or up to 3600 s, got {self.held_key_timeout_s}")

    def to_dict(self) -> dict:
        return asdict(self)
