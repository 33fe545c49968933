"""The command line: ``tmrl`` with its subcommands and the ``tmrl-server`` / ``tmrl-worker`` / ``tmrl-trainer``
entry points (all in ``tmrl.cli.main``)."""
