"""udpchat: a multi-user terminal chat over UDP with its own reliability layer."""

__version__ = "0.1.0"
