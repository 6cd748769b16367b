"""`python -m app` = the `edgedet` command."""

from app.cli import entry

if __name__ == "__main__":
    entry()
