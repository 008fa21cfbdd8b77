"""``codescaler serve``: the scorer as an HTTP service for RL trainers.

Not an engine of the run loop: requests arrive one at a time and a coalescing worker
(batcher.py) scores them together with the same scorer every path builds
(``scoring.build.build_scorer``). The trainer's prompt is trusted structure and the
policy's response untrusted content (parse.py); slow, oversized or abandoned requests
cost little (protocol.py, batcher.py).
"""
