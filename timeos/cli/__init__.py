"""timeos, the CLI: entry point, typer app (thin), stdlib socket client, rendering.

Entry-point layer: may import the ground floor, `timeos.time` and `timeos.rules` (offline checks
and previews); never the store or the daemon.
"""
