"""MIDI I/O: inputs read from a thread of ours, outputs, the note ledger, the recorder, the MIDI system."""
