"""The hot folder's tests (a package, so that its conftest and helpers never shadow
the top-level ``conftest`` other test modules import)."""
