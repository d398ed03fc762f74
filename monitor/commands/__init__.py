"""The command line: one module per command, the demo and the bench."""
