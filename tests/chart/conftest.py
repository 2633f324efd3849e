"""Fixtures of the chart tests (the helpers live in chart_helpers.py)."""

from chart_helpers import helm, render

__all__ = ["helm", "render"]
