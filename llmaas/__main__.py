"""`python -m llmaas` runs the CLI (used by the supervisor to start each component)."""

from llmaas.operator.cli import main

if __name__ == "__main__":
    main()
