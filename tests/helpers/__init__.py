"""Helpers the test modules share: servers, storage, calls, carriers, post-call work.

Test modules import from here (and from `tests.audio`, `tests.fakes`), never from one
another; shared fixtures live in `tests/conftest.py`.
"""
