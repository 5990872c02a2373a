"""The operator's window: a dashboard and a JSON API over the runs (``sparkle ui``).

Server-rendered pages (Jinja2) with a little JavaScript, live updates by server-sent
events, served by uvicorn. Every action calls the same service functions as the CLI
(:mod:`sparkle.lifecycle`, :mod:`sparkle.dlq`). Security: :mod:`sparkle.web.security` and
``docs/SECURITY.md``.
"""
