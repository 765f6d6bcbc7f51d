"""The embedded SQLite store: connection (pragmas, transactions, checkpoints), schema and
migrations (sqlite-utils), queries. sqlite3 errors are translated here and nowhere else.
"""
