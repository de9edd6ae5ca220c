"""The server's routers: the songbird sessions API (``sessions``), presigned uploads
(``uploads``) and the local extras (``local``). The observatory pages are in ``observatory/``.

Routers are thin: they parse, call the store through the dependencies in ``deps``, and answer.
"""
