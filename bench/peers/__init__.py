"""Peer benchmarks for the executor (issue 5, Performance).

Each peer runs a sequential workflow of ``steps`` steps, ``runs`` times, on the same
Postgres and the same loopback tool server as planexec, and reports per-step time, per-step
overhead over the bare step body, steps/s and Postgres commits per step. Peers: the floor
(one ``INSERT`` committed per step, :mod:`bench.peers.floor`), DBOS Transact
(:mod:`bench.peers.dbos_peer`) and LangGraph with ``PostgresSaver``
(:mod:`bench.peers.langgraph_peer`). ``python -m bench.peers.run_peers`` runs them all.
"""
