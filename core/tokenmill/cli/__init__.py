"""The `tokenmill` command line: main.py dispatches to one `<name>_cmd` module per subcommand."""
