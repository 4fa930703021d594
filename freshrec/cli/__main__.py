"""`python -m freshrec.cli`: the `freshrec` command."""

from freshrec.cli import main

main()
