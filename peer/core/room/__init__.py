"""The room around the game: the rendezvous protocol as a client sees it, who hosts and who takes
over, LAN announcements, one game per room, item news, what the player is told, and the
session's phases. Pure: the asyncio side is `peer.session`, `peer.host_role`, `peer.mesh.room`."""
