"""Allow ``python -m udpchat``."""

from udpchat.cli import main

main()
