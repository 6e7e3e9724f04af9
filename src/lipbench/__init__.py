"""lipbench: text → speech → Wav2Lip lip-sync video, and a workbench to measure it."""

__version__ = "0.1.0"
