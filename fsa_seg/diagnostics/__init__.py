"""Checks of the environment and the data."""
