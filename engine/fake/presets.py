"""Preset names, importable without the data generator (numpy/pyarrow) for CLI parsing."""

PRESETS = ("demo", "small", "lan", "wan", "big", "chaos")
