"""The `dunwise` subcommands, one module each; `starter.py` parses and dispatches."""
