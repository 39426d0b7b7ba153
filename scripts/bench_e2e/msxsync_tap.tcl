# bench_e2e: in the msxsync sender, log when msxsync's watcher reports the benchmark byte.
#
# Needs ::bench_address and ::bench_detect_path (set by the generated params.tcl, loaded first).
# The link's watcher (peer/core/emulator/openmsx_protocol.py) compares the shared regions once per frame
# and reports changes by assigning its `msxsync_changes` setting:
# "RUN SEQ EMUTIME WALL_US JUMPED ADDR NEW OLD ADDR NEW OLD ...".
# A variable trace on it time stamps the moment a write leaves openMSX, which splits msxsync's
# latency into detection (send -> report) and the rest (report -> receivers' RAM).
# Lines are "VALUE MICROSECONDS". The setting exists only once the link is installed: poll.
set ::bench_detect_log [open $::bench_detect_path w]
proc bench_reported {name1 name2 op} {
    set now [clock microseconds]
    foreach {address hex old} [lrange [set ::$name1] 5 end] {
        if {$address == $::bench_address} {
            puts $::bench_detect_log "[scan [string range $hex 0 1] %x] $now"
            flush $::bench_detect_log
        }
    }
}
proc bench_tap_install {} {
    if {[info exists ::msxsync_changes]} {
        trace add variable ::msxsync_changes write bench_reported
        return
    }
    after realtime 0.1 bench_tap_install
}
bench_tap_install
