"""Kubernetes mode: the node's NodeAssignment kept in a cache file the agent runs from, and the
agent's state reported back (NodeAssignment status, Events). The agent never waits for the API:
it runs from the cache file, which the source only replaces with a spec that parses."""
