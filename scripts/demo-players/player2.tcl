# player2 (joins a few seconds after player1): start the game, fetch a coin, then walk into the
# spikes, which take the highest item held (the key player1 found) and drop it back in the room.
msxsync_demo_at 8 0x01
msxsync_demo_at 20 0x40 0x40
msxsync_demo_at 24 0x20 0x20
msxsync_demo_at 27 0x10 0x10
