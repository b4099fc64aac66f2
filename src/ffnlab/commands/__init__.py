"""One module per `ffnlab` subcommand (discovered by `ffnlab.cli`)."""
