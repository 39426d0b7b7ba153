# bench_e2e: create ::bench_booted_path once the cartridge runs its main loop.
#
# Needs ::bench_booted_path, ::bench_boot_address and ::bench_boot_value (set by the generated
# params.tcl, loaded first). C-BIOS shows its logo for about four emulated seconds before it
# starts the cartridge, whose first act is clearing C000-EFFF, the benchmark byte included. The
# benchmark starts its timed writes only after every emulator is past that clear: a clear in
# the middle of a run would overwrite the byte (and, in a peer that is already sharing, be
# published to everyone).
proc bench_boot_poll {} {
    if {![catch {peek $::bench_boot_address} value] && $value == $::bench_boot_value} {
        close [open $::bench_booted_path w]
        return
    }
    after realtime 0.1 bench_boot_poll
}
bench_boot_poll

# A write watchpoint on ADDRESS running COMMAND, with the command this openMSX has: openMSX 21
# adds `debug watchpoint create` and deprecates `debug set_watchpoint`, the only one of 18 and 20.
proc bench_watchpoint {address command} {
    if {[catch {debug watchpoint create -type write_mem -address $address -command $command}]} {
        debug set_watchpoint write_mem $address {} $command
    }
}
