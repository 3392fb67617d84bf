"""`python -m cacovid …`: the same command line as the `cacovid` script (no install needed)."""

from cacovid.cli import main

if __name__ == "__main__":
    main()
