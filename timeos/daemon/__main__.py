"""`python -m timeos.daemon` runs timeosd."""

from timeos.daemon.main import main

main()
