"""Time, purely: cron/every/weekday triggers with our DST policy over croniter, occurrence planning,
previews of fire times.

Pure core: imports the ground floor (model, errors, timefmt) and croniter; no I/O, no clock, no
store, no HTTP. Every function that decides something takes `now`.
"""
