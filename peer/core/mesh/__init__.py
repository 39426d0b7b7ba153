"""Links between peers: who dials whom and when, the identity binding, the rendezvous's relay as
the last resort, the signals and the path a link takes; and the mesh core that runs them for a
whole room. Pure: the asyncio and aiortc side is `peer.mesh`."""
