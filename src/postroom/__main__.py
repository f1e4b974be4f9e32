"""`python -m postroom` runs the `postroom` command."""

from postroom.cli import main

main()
