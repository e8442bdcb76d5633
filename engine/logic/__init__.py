"""The pure floor: plain data in, plain data out, the time and the random source passed in.

Nothing here imports Redis, Kafka, faust, a web framework, an HTTP client or a file watcher,
nor anything from engine/store, engine/flows or engine/routes (tests/unit/test_layout.py
checks it; `make lint` runs mypy --strict on it). See docs/architecture.md.
"""
