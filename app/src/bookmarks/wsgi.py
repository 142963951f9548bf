"""The WSGI entry point: ``gunicorn bookmarks.wsgi:app``.

The config comes from ``BOOKMARKS_CONFIG`` (default: production), so a server that forgot to set
anything gets the strict checks and refuses to start with a message naming what is missing.
"""

from bookmarks import create_app

app = create_app()
