"""timeosd: composition root (main), scheduler loop, occurrence planner loop, service (one method
per API call) and the HTTP API over it.

Entry-point layer: may import everything except the CLI; only main.py builds concrete adapters.
"""
