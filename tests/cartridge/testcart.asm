; msxsync test cartridge: behaves like a game where it matters for the openMSX link.
;
; Assemble with scripts/build-test-cartridge (Debian's pasmo); the built testcart.rom is committed.
;
; At boot it clears its RAM (C000-EFFF), as real games do, then runs one loop iteration per
; VDP frame (EI; HALT waits for the vertical blank interrupt). Every frame it:
;   E000      increments (a byte that changes every frame)
;   E001      rewrites 42h (a byte rewritten with an unchanged value every frame)
;   E141      copies E040 (so tests see what the CPU reads at E040)
; and, only when told:
;   E100 = 1  burst: writes E010-E01F three times in one frame (final values 30h..3Fh)
;   E100 = 2  increments E020 once ("picks up an item")
;   E100 = 3  writes E101 to E021 (a value chosen by the test)
;             E100 is cleared after each command.
;   space     while the space key is held, increments E022 every frame
;
; E100-E1FF (the command area and E141) are outside the regions tests share.

SNSMAT:         equ 0141h           ; BIOS: read keyboard matrix row A -> A (bits active low)

frame:          equ 0E000h
steady:         equ 0E001h
burst:          equ 0E010h
item:           equ 0E020h
poked:          equ 0E021h
keyed:          equ 0E022h
applied:        equ 0E040h
command:        equ 0E100h
argument:       equ 0E101h
seen:           equ 0E141h

                org 4000h
                db "AB"
                dw start
                dw 0, 0, 0, 0, 0, 0

start:          di
                ld sp, 0F380h
                ld hl, 0C000h           ; clear C000-EFFF
                ld de, 0C001h
                ld bc, 2FFFh
                ld (hl), 0
                ldir
                ei

loop:           halt                    ; one iteration per VDP frame
                ld hl, frame
                inc (hl)
                ld a, 42h
                ld (steady), a
                ld a, (applied)
                ld (seen), a
                ld a, (command)
                cp 1
                call z, do_burst
                cp 2
                call z, do_item
                cp 3
                call z, do_poke
                ld a, 8                 ; row 8: bit 0 is the space key
                call SNSMAT
                bit 0, a
                jr nz, loop
                ld hl, keyed
                inc (hl)
                jr loop

do_burst:       ld c, 1                 ; three passes: 10h.., 20h.., then 30h..3Fh stays
burst_pass:     ld a, c
                add a, a
                add a, a
                add a, a
                add a, a
                ld hl, burst
                ld b, 16
burst_byte:     ld (hl), a
                inc hl
                inc a
                djnz burst_byte
                inc c
                ld a, c
                cp 4
                jr nz, burst_pass
                jr done
do_item:        ld hl, item
                inc (hl)
                jr done
do_poke:        ld a, (argument)
                ld (poked), a
done:           xor a
                ld (command), a
                ret

                ds 8000h - $, 0FFh
