# bench_e2e receiver: log every write to the benchmark byte, with the wall clock, to a file.
#
# Needs ::bench_address, ::bench_recv_path and ::bench_speed (set by the generated params.tcl,
# loaded first). The watchpoint fires for the game's writes and for `debug write memory` /
# `debug write_block memory` from outside (the floor relay, msxsync's apply), so it time stamps
# the moment the byte lands in emulated RAM. Lines are "VALUE MICROSECONDS".
set ::bench_recv_log [open $::bench_recv_path w]
proc bench_received {} {
    set now [clock microseconds]
    puts $::bench_recv_log "$::wp_last_value $now"
    flush $::bench_recv_log
}
bench_watchpoint $::bench_address bench_received
# A receiver runs a few percent fast so its frames drift through every phase of the sender's:
# one run then samples every phase offset instead of one arbitrary one.
set speed $::bench_speed
