"""Offline voice commands: audio sources, end-of-speech detection, Vosk, intents."""
