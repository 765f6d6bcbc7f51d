"""The browser dashboard served under /ui/ on the TCP listener: Jinja2 templates, vendored htmx,
a small CSS and JS file, server-rendered SVG charts.

An entry point like daemon/ and cli/: it reads and acts through the daemon's Service (the same
calls the HTTP API makes, no second data path) and imports nothing of the store or actions.
"""
