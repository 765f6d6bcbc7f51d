"""TimeOS: a temporal rule engine. `timeosd` runs rules; `timeos` talks to it over a Unix socket."""

__version__ = "0.1.0"
