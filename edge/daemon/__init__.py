"""The on-device daemon: an OpenAI-compatible HTTP layer over ``Runtime.handle``.

The split follows uvicorn's: ``commands`` (the ``edge serve`` click command) parses options and
builds the runtime, ``config`` holds the daemon's own settings (the policy file's ``daemon``
section: address, API key, limits, model, contexts, state and access log), ``app`` makes the
FastAPI application over a ``Runtime`` (``schemas`` the requests, ``responses`` the answers,
``sse`` the event streams, ``errors`` the error bodies, ``metrics`` Prometheus), ``persistence``
keeps the request counters and the router's state across restarts, and ``server`` runs it all
under uvicorn with a two-stage shutdown; ``stats_command`` is ``edge stats``. The HTTP layer adds
no request path of its own: every completion goes through ``Runtime.handle`` or
``Runtime.stream``.

    from edge.daemon.app import create_app
    from edge.daemon.server import serve
    serve(runtime, host="127.0.0.1", port=8000)      # blocks; closes the runtime on the way out

Nothing heavy is imported here, so ``edge --help`` stays light.
"""
