"""Backends: what loads a pageable object into memory and serves a request with it.

``base`` holds the protocol every backend implements; the simulator's backend lives in
``edge.sim.backend``.
"""
