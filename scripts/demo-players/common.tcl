# msxsync demo without a display: scripted hands for a headless player (scripts/demo passes
# common.tcl and then player1.tcl or player2.tcl with --openmsx-script). Times are emulated
# seconds since power-on; the C-BIOS logo takes about 5 of them, then the demo's title screen
# waits for space. The room (games/demo.asm): a player starts at (16, 11); the key lies at
# (18, 11), the first coin at (16, 13), spikes at (14, 11).

# MSX keyboard row 8: space 0x01, left 0x10, up 0x20, down 0x40, right 0x80.
proc msxsync_demo_press {mask} {
    keymatrixdown 8 $mask
    after time 0.1 [list keymatrixup 8 $mask]
}

# Press the keys of MASKS at SECONDS, half a second apart.
proc msxsync_demo_at {seconds args} {
    foreach mask $args {
        after time $seconds [list msxsync_demo_press $mask]
        set seconds [expr {$seconds + 0.5}]
    }
}
