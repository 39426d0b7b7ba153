"""The emulator side: openMSX's control protocol and the Tcl msxsync installs, what each openMSX
version offers, when a game is armed, and the gate between the emulator and the room. Pure: the
process and its control stream are `peer.openmsx`."""
