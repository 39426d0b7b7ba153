# bench_e2e sender: make the game write the benchmark byte at known times; log each write.
#
# Needs ::bench_address, ::bench_command, ::bench_argument, ::bench_send_path, ::bench_go_path,
# ::bench_count and ::bench_interval (set by the generated params.tcl, loaded first).
# The write is the emulated CPU's, as a game's would be: the test cartridge copies the byte at
# ::bench_argument to ::bench_address (E021) in the frame after ::bench_command (E100) is set
# to 3. A write injected by Tcl instead would happen between openMSX's bursts of emulation and
# wait for the next burst to be seen, which no game write does. A watchpoint logs the wall clock
# of the CPU's write: "VALUE MICROSECONDS" per write, "go MICROSECONDS" when the timed writes
# begin, then "done". If openMSX stalls so long that two commands come before the cartridge's
# next frame, the first value is never written (the benchmark counts it as unwritten).
# Warm-up: until the go file exists, 250 and 251 in turn every half second, so the benchmark
# can see that every receiver is connected (and armed) before measuring.
# Then: 1, 2, ... ::bench_count, one every ::bench_interval seconds of real time.
set ::bench_send_log [open $::bench_send_path w]
proc bench_written {} {
    set now [clock microseconds]
    puts $::bench_send_log "$::wp_last_value $now"
    flush $::bench_send_log
}
bench_watchpoint $::bench_address bench_written
set ::bench_value 0
set ::bench_warm 250
proc bench_write {value} {
    # Powered off (still starting) there is no memory to write yet: try again next time.
    catch {
        debug write memory $::bench_argument $value
        debug write memory $::bench_command 3
    }
}
proc bench_warmup {} {
    if {[file exists $::bench_go_path]} {
        # Everything logged before this line (C-BIOS writes E021 while it boots) is not ours.
        puts $::bench_send_log "go [clock microseconds]"
        flush $::bench_send_log
        after realtime 0.5 bench_send
        return
    }
    set ::bench_warm [expr {$::bench_warm == 250 ? 251 : 250}]
    bench_write $::bench_warm
    after realtime 0.5 bench_warmup
}
proc bench_send {} {
    incr ::bench_value
    if {$::bench_value > $::bench_count} {
        # The cartridge makes the last write in its next frame.
        after realtime 0.2 {puts $::bench_send_log done; flush $::bench_send_log}
        return
    }
    after realtime $::bench_interval bench_send
    bench_write $::bench_value
}
after realtime 0.5 bench_warmup
