"""Kairos engine."""
