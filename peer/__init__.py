"""msxsync-peer: the player's program (openMSX link, WebRTC mesh, the pure sync core in `peer.core`)."""
