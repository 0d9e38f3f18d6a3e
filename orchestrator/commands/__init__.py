"""One module per ``mmbal`` subcommand; each defines ``register(subparsers)``."""
