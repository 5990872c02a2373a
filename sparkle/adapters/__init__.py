"""Stage adapters: the functions that do each stage's media work."""
