"""commprof's version, in a module of its own: code anywhere in the package reads it without
importing the root package (whose public API imports ``capture`` and ``analysis``)."""
__version__ = "0.1.0"
