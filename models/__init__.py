"""Kairos models."""
