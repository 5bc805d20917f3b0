"""Helpers the graders share."""
