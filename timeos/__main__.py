"""`python -m timeos` runs the CLI (`python -m timeos.daemon` runs the daemon)."""

from timeos.cli.entry import main

main()
