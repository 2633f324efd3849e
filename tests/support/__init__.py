"""Test support shared by several tiers (operator, system): the Kubernetes API emulator."""
