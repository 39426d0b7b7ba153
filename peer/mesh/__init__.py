"""The peer mesh: signalling client, WebRTC links and the loop that ties them to the replica.

Adapters only: the rules (binding, merge, rate limits) live in `peer.core`.
"""
