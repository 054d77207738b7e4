"""The on-device daemon: an OpenAI-compatible HTTP layer over ``Runtime.handle``.

The split follows uvicorn's: ``commands`` (the ``edge serve`` click command) parses options and
builds the runtime, ``config`` holds the daemon's own settings (address, API key, limits),
``app`` makes the FastAPI application over a ``Runtime`` and ``server`` runs it under uvicorn
with a two-stage shutdown. The HTTP layer adds no request path of its own: every completion goes
through ``Runtime.handle``.

    from edge.daemon.app import create_app
    from edge.daemon.server import serve
    serve(runtime, host="127.0.0.1", port=8000)      # blocks; closes the runtime on the way out

Nothing heavy is imported here, so ``edge --help`` stays light.
"""
