"""The proxbox server: app factory, typed app state, routes, HTTP + WebSocket handlers, ``proxbox serve``.

Import :func:`proxbox.web.app.create_app` to build the application; nothing is built at import time.
"""
