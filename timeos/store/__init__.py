"""Persistence: `protocol.py` names every operation the daemon needs; `sqlite/` implements it.

The only package that imports a database driver (sqlite3, sqlite_utils); foreign errors become
StoreError inside it. Imports the ground floor only.
"""
