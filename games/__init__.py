"""Game definitions and the games bundled with msxsync (data files live beside this module)."""
