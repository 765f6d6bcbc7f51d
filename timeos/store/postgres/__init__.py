"""The PostgreSQL store: several timeosd daemons on one database (issue 12).

It runs the SQLite store's queries through a small dialect translation (dialect.py) on a psycopg
connection pool (connection.py), with its own schema and migrations (schema.py) and the claim
that several daemons share (`FOR UPDATE SKIP LOCKED`, store.py). psycopg errors become StoreError
in connection.py and nowhere else. Imports the ground floor, the core and store/sqlite/.
"""
