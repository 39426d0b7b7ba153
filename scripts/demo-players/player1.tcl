# player1 (hosts; starts first): start the game, pick up the key, later pick it up again after
# player2's spike hit dropped it back into the room.
msxsync_demo_at 8 0x01
msxsync_demo_at 16 0x80 0x80
msxsync_demo_at 36 0x10 0x80
