"""Tests of what happens on bad input."""
