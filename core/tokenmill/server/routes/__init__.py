"""The HTTP routes, one module per role: completions, chat, tokens, info."""
