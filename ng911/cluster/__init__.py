"""The cluster: redundant nodes sharing call state in PostgreSQL (DESIGN "Cluster").

- ``lease``: this node's lease and its view of the others (pure, injected clock)
- ``sql``: the heartbeat and the claim of a dead node's calls (blocking SQL, run off the reactor)
- ``gate``: fencing on the wire: what this node may send, and what it holds or drops
- ``member``: the Twisted shell that beats, claims and restores
- ``view``: read-only queries for ``ng911 status``
"""
