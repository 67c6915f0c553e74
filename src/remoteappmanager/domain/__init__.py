"""Pure domain: value objects and functions with no I/O and no framework."""
