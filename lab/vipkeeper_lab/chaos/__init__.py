"""Chaos cycles on the lab: a seeded fault schedule, the timeline judge, and the runner.

faults.py and timeline.py are pure (no I/O, table-tested); runner.py drives a Lab.
"""
