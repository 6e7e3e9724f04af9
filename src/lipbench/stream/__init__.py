"""Streaming output: a chunk's frames are encoded into short MPEG-TS segments (with their
slice of the audio) while they render, a growing HLS playlist lists them in play order, and
the final MP4 is made from the same segments by stream copy.

- ``segments``: the per-chunk encoder that writes segments (replica side).
- ``playlist``: the publisher that appends finished segments to ``index.m3u8`` in order.
- ``stall``: time to the first playable frame and stall time from segment ready times.
"""
