# bench_e2e sender: write the benchmark byte at known times and log each write's wall clock.
#
# Needs ::bench_address, ::bench_send_path, ::bench_go_path, ::bench_count and ::bench_interval
# (set by the generated params.tcl, loaded first).
# Warm-up: until the go file exists, write 250 and 251 in turn every half second, so the
# benchmark can see that every receiver is connected (and armed) before measuring.
# Then: write 1, 2, ... ::bench_count, one every ::bench_interval seconds of real time, logging
# "VALUE MICROSECONDS" per write, and finally "done".
set ::bench_send_log [open $::bench_send_path w]
set ::bench_value 0
set ::bench_warm 250
proc bench_write {value} {
    # Powered off (still booting) there is no memory to write yet: try again next time.
    catch {debug write memory $::bench_address $value}
}
proc bench_warmup {} {
    if {[file exists $::bench_go_path]} {
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
        puts $::bench_send_log done
        flush $::bench_send_log
        return
    }
    # Schedule the next write first, so the time spent logging does not stretch the period.
    after realtime $::bench_interval bench_send
    set now [clock microseconds]
    bench_write $::bench_value
    puts $::bench_send_log "$::bench_value $now"
    flush $::bench_send_log
}
after realtime 0.5 bench_warmup
