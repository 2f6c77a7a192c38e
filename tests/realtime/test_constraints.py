"""Live constraints on musebot's parts: key lock and key following, registers, density, velocity, mute/solo,
from a configuration file and by controller; the per-part masks on a real vocabulary."""

from __future__ import annotations

import numpy as np
import pytest

from musebot.engine.masks import DRUM_CHANNEL
from musebot.realtime.constraints import (
    DEFAULT_PARTS,
    KeyLock,
    KeyTracker,
    LiveSettings,
    PartMasks,
    PartsConfigError,
)
from musebot.tokenizers.vocab import Vocabulary

C_MAJOR = [60, 62, 64, 65, 67, 69, 71, 72]
F_SHARP_MAJOR = [66, 68, 70, 71, 73, 75, 77, 78]


def test_a_key_is_named_as_musicians_name_it():
    assert KeyLock.parse("Eb major").pitch_classes() == frozenset({3, 5, 7, 8, 10, 0, 2})
    assert KeyLock.parse("a minor").pitch_classes() == KeyLock.parse("C major").pitch_classes()
    assert KeyLock.parse("off").pitch_classes() is None
    assert KeyLock.parse("auto").mode == "auto"
    with pytest.raises(PartsConfigError, match="e.g. 'Eb major'"):
        KeyLock.parse("H dur")


def test_the_key_tracker_follows_the_musician_from_c_to_f_sharp_within_a_few_notes():
    tracker = KeyTracker()
    for i, pitch in enumerate(C_MAJOR):
        tracker.hear(i * 0.5, pitch)
    assert tracker.tonic == 0 and tracker.pitch_classes() == KeyLock.parse("C major").pitch_classes()
    # One chromatic passing note does not move the key; the notes after it end the surprise (C#-D-E
    # could still be D major, the F says no; D-E-F could be F major, the B says no).
    for i, pitch in enumerate((61, 62, 64, 65, 71)):
        tracker.hear(3.5 + i * 0.25, pitch)
        assert tracker.tonic == 0
    assert tracker.tonic == 0 and tracker.pitch_classes() == KeyLock.parse("C major").pitch_classes()
    keys = []
    f_sharp = KeyLock.parse("F# major").pitch_classes()
    for i, pitch in enumerate(F_SHARP_MAJOR):
        tracker.hear(5.5 + i * 0.5, pitch)
        keys.append(tracker.tonic)
        # From the first new note on, the parts may use only classes of the new key, whichever it is.
        assert tracker.pitch_classes() <= f_sharp
    # F#, G#, A# fit several keys; the fourth note (B) settles it, and it stays settled (two beats).
    assert keys[-1] == 6 and all(k == 6 for k in keys[3:])
    assert tracker.pitch_classes() == f_sharp


def test_parts_come_from_defaults_and_a_toml_file_overrides_them(tmp_path):
    config = tmp_path / "band.toml"
    config.write_text(
        'key = "D major"\n'
        "[parts.bass]\nchannel = 5\nlow = 30\nhigh = 50\n"
        "[parts.chords]\nvelocity_scale = 0.5\n"
        "[controls]\n\"bass.mute\" = 70\n"
    )
    settings = LiveSettings.for_parts(["bass", "chords"], config)
    assert settings.parts["bass"].channel == 5 and settings.parts["bass"].program == DEFAULT_PARTS["bass"].program
    assert settings.parts["chords"].velocity(100) == 50
    assert str(settings.key) == "D major (fixed)"
    assert settings.controls["bass.mute"] == 70


@pytest.mark.parametrize("text, message", [
    ('[parts.bass]\nchannel = 16\n', "channel must be 0..15"),
    ('[parts.bass]\nloudness = 3\n', "unknown settings"),
    ('[parts.bass]\nlow = 60\nhigh = 40\n', "low <= high"),
    ('[controls]\n"bass.mute" = 300\n', "0..127"),
    ('[parts.bass\n', "cannot parse"),
])
def test_a_bad_parts_file_says_what_is_wrong(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(PartsConfigError, match=message):
        LiveSettings.for_parts(["bass"], path)


def test_unknown_parts_and_missing_files_are_refused(tmp_path):
    with pytest.raises(PartsConfigError, match="unknown part 'tuba'"):
        LiveSettings.for_parts(["tuba"])
    with pytest.raises(PartsConfigError, match="no such"):
        LiveSettings.for_parts(["bass"], tmp_path / "none.json")


def test_controllers_mute_solo_thin_and_scale_the_parts():
    settings = LiveSettings.for_parts(["bass", "chords", "drums"])
    numbers = settings.controls
    assert settings.control(numbers["bass.mute"], 127) == "bass mute -> True"
    assert not settings.audible("bass") and settings.audible("chords")
    settings.control(numbers["bass.mute"], 0)
    settings.control(numbers["drums.solo"], 100)
    assert [n for n in settings.parts if settings.audible(n)] == ["drums"]
    settings.control(numbers["chords.density"], 0)
    assert settings.parts["chords"].density == 0.0
    settings.control(numbers["chords.velocity"], 127)
    assert settings.parts["chords"].velocity(90) == 127
    assert settings.control(20, 64) is None  # not a part controller


def test_part_masks_keep_each_channel_in_its_register_and_key():
    vocab = Vocabulary.for_version("v2")
    bass, chords = DEFAULT_PARTS["bass"], DEFAULT_PARTS["chords"]
    tracks = {1: 0, 2: bass.channel, 3: chords.channel, 4: DRUM_CHANNEL}
    d_major = KeyLock.parse("D major").pitch_classes()
    masks = PartMasks(vocab, tracks, {bass.channel: (bass.low, bass.high), chords.channel: (chords.low,
                      chords.high)}, d_major)
    kinds = vocab.events["note"]
    row = np.full(8, vocab.pad_id, np.int64)
    row[0] = vocab.event_ids["note"]
    off = vocab.parameter_offsets
    for track, channel in tracks.items():
        row[kinds.index("track") + 1] = off["track"] + track
        channels = masks.allowed(kinds.index("channel") + 1, row)
        assert channels.tolist() == [off["channel"] + channel]  # each track is bound to its channel
        row[kinds.index("channel") + 1] = off["channel"] + channel
        pitches = masks.allowed(kinds.index("pitch") + 1, row) - off["pitch"]
        if channel == DRUM_CHANNEL:
            assert len(pitches) == 128  # a drum "pitch" picks an instrument: no key there
            continue
        assert set(pitches % 12) <= d_major
        if channel == bass.channel:
            assert pitches.min() >= bass.low and pitches.max() <= bass.high
    with pytest.raises(PartsConfigError, match="no note of the key"):
        PartMasks(vocab, {1: 0, 2: 3}, {3: (60, 60)}, d_major)
