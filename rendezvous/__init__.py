"""msxsync-rendezvous: games, rooms and WebRTC signalling for players to find each other."""
