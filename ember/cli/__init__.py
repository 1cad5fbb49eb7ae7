"""Ember's command line: ``ember demo | train | generate | bench | graph``."""

__all__ = []
