"""Kairos streams."""
