# bench_e2e floor: the thinnest relay's sending half. Every write to the benchmark byte is
# printed on stderr, where the benchmark reads it and writes the byte into the other emulator.
# Needs ::bench_address (set by the generated params.tcl, loaded first).
bench_watchpoint $::bench_address {puts stderr "bench-relay $::wp_last_value"}
