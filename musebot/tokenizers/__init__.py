"""Score format and SkyTNT-compatible tokenizers (pure: no I/O beyond reading and writing MIDI files)."""

from musebot.tokenizers.score import MidiFileError, Score, load_score, save_score, score_to_midi
from musebot.tokenizers.tokenizer import MIDITokenizer, detect_key
from musebot.tokenizers.vocab import Vocabulary

__all__ = [
    "MIDITokenizer", "MidiFileError", "Score", "Vocabulary", "detect_key", "load_score", "save_score",
    "score_to_midi",
]
