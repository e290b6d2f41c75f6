"""End-to-end jobs behind the ``mdeberta`` subcommands (pretrain, plot, ...)."""
