"""`python -m plandb`: the same command as `plandb`."""

from .cli import main

main(prog_name="plandb")
