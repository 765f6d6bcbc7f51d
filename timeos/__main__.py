"""`python -m timeos` runs the CLI (`python -m timeos.daemon` runs the daemon)."""

from timeos.emitting import main

main()
