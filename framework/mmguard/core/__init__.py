"""The bottom layer: the user-error type, parameter declarations, the registries, atomic I/O and constants.
Everything else may import it; it imports nothing of mmguard above it."""
