"""moat: compile one versioned blueprint into one immutable, checked bundle."""

__version__ = "0.1.0"
