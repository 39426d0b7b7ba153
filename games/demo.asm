; msxsync co-op demo: a tiny MSX cartridge written for msxsync.
;
; SPDX-License-Identifier: MIT
; Copyright (c) 2026 the msxsync authors
;
; Permission is hereby granted, free of charge, to any person obtaining a copy of this software
; and associated documentation files (the "Software"), to deal in the Software without
; restriction, including without limitation the rights to use, copy, modify, merge, publish,
; distribute, sublicense, and/or sell copies of the Software, and to permit persons to whom the
; Software is furnished to do so, subject to the following conditions:
;
; The above copyright notice and this permission notice shall be included in all copies or
; substantial portions of the Software.
;
; THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING
; BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND
; NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM,
; DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
; OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.
;
; Build: scripts/build-demo (pasmo games/demo.asm games/demo.rom). 16 KB ROM at 4000h; runs on
; any MSX1 or later BIOS (tested on C-BIOS MSX1, MSX2 and MSX2+), screen 1 (32x24 tiles).
;
; The game: a title screen; SPACE (or fire) starts; then one room where you walk with the cursor
; keys (or joystick 1), pick up eight items and coins; spikes take away your last item and send you
; back to the start. With msxsync all players share one bag: inventory and coins.
;
; What matters for msxsync, and why the code is written this way:
; - The whole work area E000h-EFFFh is cleared at boot, as real games do. msxsync must not
;   publish that clear: the definition only arms once STATE says a game is in progress.
; - Inventory and coins live in one small block (SHARED). Another player's pickup arrives as
;   bytes written into that block from outside, so every frame the game derives from those bytes
;   alone what it shows: the inventory line, the coin counter, and which items still lie in the
;   room. The game writes a shared byte only when its value changes (a pickup, a loss).
; - The player's position is private (PRIVATE block): every player walks on their own.
;
; RAM map (page 3; "shared" = listed in games/demo.regions):
;   E000h        STATE       00 = booting / title screen, 01 = game in progress (armed-when)
;   E001h-E00Fh  reserved, private
;   E010h-E017h  INVENTORY   shared; one byte per item (00 = not held, anything else = held):
;                            key, gem, sword, shield, potion, ring, scroll, crown
;   E018h        COINS       shared; BCD 00-99, stops at 99
;   E019h-E01Fh  reserved (not shared)
;   E020h        PLAYER_X    private; tile column 0-31
;   E021h        PLAYER_Y    private; tile row 0-23
;   E022h        COIN_INDEX  private; which coin_spots entry the coin lies on (0-7)
;   E023h        KEYS_PREV   private; input bits of the previous frame (for key edges)
;   E024h        REPEAT      private; frames until a held direction key repeats
;   E025h        BEEP_LEFT   private; frames until the beep stops
;   E026h        FRAMES      private; frame counter
;   E100h-E3FFh  SHADOW      private; copy of the 32x24 name table, sent to VRAM every frame
;
; Screen (name table at VRAM 1800h): row 1 is the status line. Columns 8-15 show item 0-7 (its
; tile 90h+i when held, '-' when not); columns 27-28 show the coin digits. Row 2 says so when
; all eight items are held.

; ---- BIOS entry points (C-BIOS provides the standard ones) ----
LDIRVM:         equ 005Ch       ; HL = RAM source, DE = VRAM destination, BC = length
CHGCLR:         equ 0062h
INIT32:         equ 006Fh       ; screen 1: names 1800h, patterns 0000h, colours 2000h
WRTPSG:         equ 0093h       ; A = PSG register, E = value
GTSTCK:         equ 00D5h       ; A = port (1); returns direction 0-8
GTTRIG:         equ 00D8h       ; A = trigger (1); returns FFh when pressed
SNSMAT:         equ 0141h       ; A = keyboard row; returns bits, 0 = pressed

FORCLR:         equ 0F3E9h
BAKCLR:         equ 0F3EAh
BDRCLR:         equ 0F3EBh

; ---- VRAM layout of screen 1 ----
VRAM_PATTERNS:  equ 0000h
VRAM_NAMES:     equ 1800h
VRAM_COLOURS:   equ 2000h

; ---- RAM map (see the table above) ----
WORK_START:     equ 0E000h
WORK_SIZE:      equ 1000h
STATE:          equ 0E000h
INVENTORY:      equ 0E010h
ITEM_COUNT:     equ 8
COINS:          equ 0E018h
PLAYER_X:       equ 0E020h
PLAYER_Y:       equ 0E021h
COIN_INDEX:     equ 0E022h
KEYS_PREV:      equ 0E023h
REPEAT:         equ 0E024h
BEEP_LEFT:      equ 0E025h
FRAMES:         equ 0E026h
SHADOW:         equ 0E100h
SCREEN_SIZE:    equ 768
STACK_TOP:      equ 0F380h      ; just below the BIOS system area; we never return to the BIOS

STATE_TITLE:    equ 0
STATE_PLAYING:  equ 1

; ---- tiles ----
TILE_SPACE:     equ 20h
TILE_EMPTY:     equ 2Dh         ; '-' : an empty inventory slot
TILE_WALL:      equ 80h
TILE_ITEM0:     equ 90h         ; items 0-7 are tiles 90h-97h
TILE_COIN:      equ 98h
TILE_SPIKES:    equ 0A0h
TILE_PLAYER:    equ 0A8h

; ---- input bits (active high, after inversion) ----
KEY_SPACE:      equ 01h
KEY_LEFT:       equ 10h
KEY_UP:         equ 20h
KEY_DOWN:       equ 40h
KEY_RIGHT:      equ 80h
KEYS_MOVE:      equ 0F0h

STATUS_ROW:     equ 1
STATUS_ITEMS_X: equ 8
STATUS_COINS_X: equ 27
MESSAGE_ROW:    equ 2
START_X:        equ 16
START_Y:        equ 11

REPEAT_FIRST:   equ 12              ; frames before a held key repeats
REPEAT_NEXT:    equ 5               ; frames between repeats

        org 4000h

; ---- cartridge header ----
        db "AB"
        dw start
        dw 0, 0, 0, 0, 0, 0

start:
        di
        ld sp, STACK_TOP
        ; Clear the whole work area, shared bytes included, like a real game at power-on.
        ld hl, WORK_START
        ld de, WORK_START + 1
        ld bc, WORK_SIZE - 1
        ld (hl), 0
        ldir
        call init_video
        call init_sound
        call show_title
        ei

; One iteration per video frame: HALT waits for the VDP's vertical blank interrupt.
main_loop:
        halt
        call blit_shadow
        call read_input         ; A = input bits, KEYS_PREV still holds the previous frame's
        ld b, a
        ld a, (STATE)
        cp STATE_PLAYING
        ld a, b
        jr z, main_playing
        call title_frame
        jr main_next
main_playing:
        call game_frame
main_next:
        ld a, b
        ld (KEYS_PREV), a
        call beep_tick
        ld hl, FRAMES
        inc (hl)
        jr main_loop

; ---- title screen ----
show_title:
        ld hl, title_screen
        jp load_template

; A = input bits. SPACE pressed this frame (not held from before) starts a game.
title_frame:
        push bc
        ld hl, KEYS_PREV
        cpl
        or (hl)
        cpl                     ; A = newly pressed = input AND NOT previous
        and KEY_SPACE
        call nz, start_game
        pop bc
        ret

; Inventory and coins are not touched here: they were cleared at boot, and from now on they may
; already hold what other players picked up.
start_game:
        ld hl, room_screen
        call load_template
        ld a, START_X
        ld (PLAYER_X), a
        ld a, START_Y
        ld (PLAYER_Y), a
        xor a
        ld (COIN_INDEX), a
        ld a, REPEAT_FIRST
        ld (REPEAT), a
        ld hl, 127              ; 880 Hz
        call beep
        ld a, STATE_PLAYING     ; set last: the game is now in progress
        ld (STATE), a
        ret

; ---- one frame of play ----
; A = input bits.
game_frame:
        push bc
        call direction_from_input      ; D = dx, E = dy (both 0 when not moving)
        ld a, d
        or e
        call nz, try_move
        call pick_up
        call draw_room
        call draw_status
        pop bc
        ret

; A = input bits -> D = dx, E = dy for this frame, with keyboard-style auto-repeat.
direction_from_input:
        ld de, 0
        ld c, a
        and KEYS_MOVE
        ret z                   ; nothing held
        ld b, a                 ; B = held directions
        ld a, (KEYS_PREV)
        cpl
        and b                   ; A = directions pressed this frame
        jr z, direction_held
        ld b, a
        ld a, REPEAT_FIRST
        jr direction_go
direction_held:
        ld hl, REPEAT
        dec (hl)
        ret nz
        ld a, REPEAT_NEXT
direction_go:
        ld (REPEAT), a
        ld a, b
        bit 5, a
        jr z, direction_not_up
        ld e, 0FFh
        ret
direction_not_up:
        bit 6, a
        jr z, direction_not_down
        ld e, 1
        ret
direction_not_down:
        bit 4, a
        jr z, direction_not_left
        ld d, 0FFh
        ret
direction_not_left:
        ld d, 1                 ; right
        ret

; D = dx, E = dy. Walls block; spikes cost the last item and send the player back to the start.
try_move:
        ld a, (PLAYER_X)
        add a, d
        ld d, a
        ld a, (PLAYER_Y)
        add a, e
        ld e, a                 ; D, E = target column, row
        push de
        ld bc, room_screen
        call cell_address       ; HL = room_screen + row * 32 + column
        pop de
        ld a, (hl)              ; what the room template holds there
        cp "#"
        ret z
        cp "^"
        jr z, hit_spikes
        call erase_player
        ld a, d
        ld (PLAYER_X), a
        ld a, e
        ld (PLAYER_Y), a
        ret

hit_spikes:
        call erase_player
        ld a, START_X
        ld (PLAYER_X), a
        ld a, START_Y
        ld (PLAYER_Y), a
        ld hl, 508              ; 220 Hz: ouch
        call beep
        ; Lose the highest-numbered item held; write only that one byte.
        ld hl, INVENTORY + ITEM_COUNT - 1
        ld b, ITEM_COUNT
hit_spikes_loop:
        ld a, (hl)
        or a
        jr nz, hit_spikes_lose
        dec hl
        djnz hit_spikes_loop
        ret                     ; nothing to lose
hit_spikes_lose:
        ld (hl), 0
        ret

; The player's tile goes back to floor in the shadow (it only ever stands on floor).
erase_player:
        push de
        call player_cell
        ld (hl), TILE_SPACE
        pop de
        ret

; HL = address of the player's cell in SHADOW.
player_cell:
        ld a, (PLAYER_X)
        ld d, a
        ld a, (PLAYER_Y)
        ld e, a
        ld bc, SHADOW
        ; fall through
; D = column, E = row, BC = base -> HL = BC + row * 32 + column. Destroys A.
cell_address:
        ld l, e
        ld h, 0
        add hl, hl
        add hl, hl
        add hl, hl
        add hl, hl
        add hl, hl
        ld a, d
        add a, l
        ld l, a
        ld a, h
        adc a, 0
        ld h, a
        add hl, bc
        ret

; Items and the coin under the player are picked up. An item already held (by anyone) is not in
; the room any more, so only bytes that change are written.
pick_up:
        ld a, (PLAYER_X)
        ld d, a
        ld a, (PLAYER_Y)
        ld e, a
        ld hl, item_spots
        ld ix, INVENTORY
        ld b, ITEM_COUNT
pick_up_item:
        ld a, (ix + 0)
        or a
        jr nz, pick_up_next     ; held already
        ld a, (hl)
        cp d
        jr nz, pick_up_next
        inc hl
        ld a, (hl)
        dec hl
        cp e
        jr nz, pick_up_next
        ld (ix + 0), 1
        push hl
        ld hl, 127              ; 880 Hz
        call beep
        pop hl
pick_up_next:
        inc hl
        inc hl
        inc ix
        djnz pick_up_item
        ; the coin
        call coin_spot          ; HL -> (column, row)
        ld a, (hl)
        cp d
        ret nz
        inc hl
        ld a, (hl)
        cp e
        ret nz
        ld a, (COIN_INDEX)
        inc a
        and 7
        ld (COIN_INDEX), a
        ld hl, 63               ; 1760 Hz
        call beep
        ld a, (COINS)
        cp 99h
        ret z                   ; full: nothing changes, nothing is written
        add a, 1
        daa
        ld (COINS), a
        ret

; HL = address of the current coin spot in coin_spots.
coin_spot:
        ld a, (COIN_INDEX)
        and 7
        add a, a
        ld hl, coin_spots
        add a, l
        ld l, a
        ld a, h
        adc a, 0
        ld h, a
        ret

; Draw everything that changes into SHADOW: items from the inventory bytes, the coin, the player.
draw_room:
        ld ix, INVENTORY
        ld iy, item_spots
        ld b, ITEM_COUNT
        ld c, TILE_ITEM0
draw_room_item:
        push bc
        ld d, (iy + 0)
        ld e, (iy + 1)
        ld bc, SHADOW
        call cell_address
        pop bc
        ld a, (ix + 0)
        or a
        ld a, c                 ; the item lies in the room while nobody holds it
        jr z, draw_room_put
        ld a, TILE_SPACE
draw_room_put:
        ld (hl), a
        inc ix
        inc iy
        inc iy
        inc c
        djnz draw_room_item
        call coin_spot
        ld d, (hl)
        inc hl
        ld e, (hl)
        ld bc, SHADOW
        call cell_address
        ld (hl), TILE_COIN
        call player_cell
        ld (hl), TILE_PLAYER
        ret

; The status line, derived every frame from the shared bytes alone.
draw_status:
        ld hl, SHADOW + STATUS_ROW * 32 + STATUS_ITEMS_X
        ld de, INVENTORY
        ld b, ITEM_COUNT
        ld c, TILE_ITEM0
draw_status_item:
        ld a, (de)
        or a
        ld a, c
        jr nz, draw_status_put
        ld a, TILE_EMPTY
draw_status_put:
        ld (hl), a
        inc hl
        inc de
        inc c
        djnz draw_status_item
        ld hl, SHADOW + STATUS_ROW * 32 + STATUS_COINS_X
        ld a, (COINS)
        ld b, a
        rrca
        rrca
        rrca
        rrca
        call hex_digit
        ld (hl), a
        inc hl
        ld a, b
        call hex_digit
        ld (hl), a
        ; Row 2 cheers once the bag is full, whoever found the last item.
        ld hl, INVENTORY
        ld b, ITEM_COUNT
draw_status_all:
        ld a, (hl)
        or a
        jr z, draw_status_missing
        inc hl
        djnz draw_status_all
        ld hl, message_all_found
        jr draw_status_message
draw_status_missing:
        ld hl, message_blank
draw_status_message:
        ld de, SHADOW + MESSAGE_ROW * 32
        ld bc, 32
        ldir
        ret

; Low nibble of A -> its digit tile ('0'-'9', then 'A'-'F' should a peer send non-BCD).
hex_digit:
        and 0Fh
        add a, "0"
        cp "9" + 1
        ret c
        add a, "A" - "9" - 1
        ret

; ---- screen ----
init_video:
        ld a, 15
        ld (FORCLR), a
        ld a, 1
        ld (BAKCLR), a
        ld (BDRCLR), a
        call INIT32
        call CHGCLR
        ld hl, patterns
        ld de, VRAM_PATTERNS + TILE_WALL * 8
        ld bc, patterns_end - patterns
        call LDIRVM
        ld hl, colours
        ld de, VRAM_COLOURS
        ld bc, 32
        jp LDIRVM

; HL = a 768-byte template in ROM. It is copied to SHADOW, with '#' turned into wall tiles, '^'
; into spikes, 'a'-'h' into items and 'o' into a coin. The SHADOW appears at the next frame.
load_template:
        ld de, SHADOW
        ld bc, SCREEN_SIZE
load_template_loop:
        ld a, (hl)
        cp "#"
        jr nz, load_template_not_wall
        ld a, TILE_WALL
        jr load_template_put
load_template_not_wall:
        cp "^"
        jr nz, load_template_not_spikes
        ld a, TILE_SPIKES
        jr load_template_put
load_template_not_spikes:
        cp "o"
        jr nz, load_template_not_coin
        ld a, TILE_COIN
        jr load_template_put
load_template_not_coin:
        cp "a"
        jr c, load_template_put
        cp "h" + 1
        jr nc, load_template_put
        add a, TILE_ITEM0 - "a"
load_template_put:
        ld (de), a
        inc hl
        inc de
        dec bc
        ld a, b
        or c
        jr nz, load_template_loop
        ret

blit_shadow:
        ld hl, SHADOW
        ld de, VRAM_NAMES
        ld bc, SCREEN_SIZE
        jp LDIRVM

; ---- input ----
; Returns A = input bits (KEY_*), 1 = pressed: keyboard row 8 (space and cursor keys) merged with
; joystick 1 and its trigger.
read_input:
        ld a, 8
        call SNSMAT
        cpl
        and KEY_SPACE | KEYS_MOVE
        push af                 ; the BIOS calls below may change any register
        ld a, 1
        call GTTRIG
        or a
        jr z, read_input_stick
        pop af
        or KEY_SPACE
        push af
read_input_stick:
        ld a, 1
        call GTSTCK             ; 1 = up, 3 = right, 5 = down, 7 = left; diagonals ignored
        ld e, a
        ld d, 0
        ld hl, stick_bits
        add hl, de
        ld c, (hl)
        pop af
        or c
        ret

stick_bits:
        db 0, KEY_UP, 0, KEY_RIGHT, 0, KEY_DOWN, 0, KEY_LEFT, 0

; ---- sound: a square-wave beep on PSG channel A ----
init_sound:
        ld a, 7
        ld e, 10111110b         ; tone A only; port B output, port A input as the BIOS wants
        call WRTPSG
        ld a, 8
        ld e, 0
        jp WRTPSG

; HL = tone period (1789773 / 16 / Hz). Starts a short beep; keeps every register but AF.
beep:
        push bc
        push de
        push hl
        push ix
        push iy
        ld a, 0
        ld e, l
        call WRTPSG
        ld a, 1
        ld e, h
        call WRTPSG
        ld a, 8
        ld e, 13
        call WRTPSG
        ld a, 6
        ld (BEEP_LEFT), a
        pop iy
        pop ix
        pop hl
        pop de
        pop bc
        ret

beep_tick:
        ld a, (BEEP_LEFT)
        or a
        ret z
        dec a
        ld (BEEP_LEFT), a
        ret nz
        ld a, 8
        ld e, 0
        jp WRTPSG

; ---- data ----
; (column, row) of items 0-7 in the room; none on a wall, spike or coin spot.
item_spots:
        db 18, 11,  3, 5,  28, 5,  3, 19,  4, 16,  27, 16,  15, 19,  29, 19

; (column, row) where the coin lies, in turn.
coin_spots:
        db 16, 13,  21, 12,  8, 8,  15, 10,  26, 13,  5, 17,  21, 19,  7, 21

; Tile patterns from TILE_WALL (80h) on, 8 bytes per tile.
patterns:
        db 0FEh, 0FEh, 0FEh, 000h, 0EFh, 0EFh, 0EFh, 000h      ; 80h wall
        ds 7 * 8, 0                                             ; 81h-87h unused
        ds 8 * 8, 0                                             ; 88h-8Fh unused
        db 000h, 060h, 090h, 09Fh, 095h, 060h, 000h, 000h      ; 90h key
        db 018h, 03Ch, 07Eh, 0FFh, 07Eh, 03Ch, 018h, 000h      ; 91h gem
        db 001h, 002h, 004h, 048h, 030h, 030h, 048h, 080h      ; 92h sword
        db 07Eh, 0FFh, 0FFh, 0FFh, 07Eh, 07Eh, 03Ch, 018h      ; 93h shield
        db 018h, 018h, 018h, 03Ch, 07Eh, 0FFh, 0FFh, 07Eh      ; 94h potion
        db 018h, 018h, 03Ch, 042h, 081h, 081h, 042h, 03Ch      ; 95h ring
        db 07Eh, 081h, 07Eh, 042h, 042h, 07Eh, 081h, 07Eh      ; 96h scroll
        db 000h, 092h, 092h, 0BAh, 0FEh, 0FEh, 0FEh, 000h      ; 97h crown
        db 000h, 03Ch, 07Eh, 066h, 066h, 07Eh, 03Ch, 000h      ; 98h coin
        ds 7 * 8, 0                                             ; 99h-9Fh unused
        db 000h, 022h, 022h, 077h, 077h, 0FFh, 0FFh, 000h      ; A0h spikes
        ds 7 * 8, 0                                             ; A1h-A7h unused
        db 018h, 018h, 07Eh, 018h, 018h, 024h, 042h, 000h      ; A8h player
patterns_end:

; One colour byte (foreground << 4 | background) per group of 8 tiles.
colours:
        db 0F1h, 0F1h, 0F1h, 0F1h, 0F1h, 0F1h, 0F1h, 0F1h      ; 00h-3Fh text: white
        db 0F1h, 0F1h, 0F1h, 0F1h, 0F1h, 0F1h, 0F1h, 0F1h      ; 40h-7Fh text: white
        db 086h                                                 ; 80h wall: red on dark red
        db 0F1h
        db 071h                                                 ; 90h items: cyan
        db 0B1h                                                 ; 98h coin: yellow
        db 091h                                                 ; A0h spikes: light red
        db 031h                                                 ; A8h player: light green
        db 0F1h, 0F1h, 0F1h, 0F1h, 0F1h, 0F1h, 0F1h, 0F1h, 0F1h, 0F1h

message_all_found:
        db "  ALL ITEMS FOUND: WELL DONE!   "
message_blank:
        ds 32, " "

title_screen:
        db "################################"
        db "#                              #"
        db "#     MSXSYNC  CO-OP  DEMO     #"
        db "#                              #"
        db "#                              #"
        db "#    ONE BAG, MANY PLAYERS:    #"
        db "#    WHAT A FRIEND PICKS UP    #"
        db "#     IS IN YOUR BAG TOO.      #"
        db "#                              #"
        db "#                              #"
        db "#    a b c d e f g h  ITEMS    #"
        db "#                              #"
        db "#    o                COINS    #"
        db "#                              #"
        db "#    ^             LOSE ITEM   #"
        db "#                              #"
        db "#                              #"
        db "#                              #"
        db "#     PRESS SPACE TO START     #"
        db "#                              #"
        db "#   CURSOR KEYS OR JOYSTICK    #"
        db "#                              #"
        db "#         MIT LICENCE          #"
        db "################################"

; The room. Rows 0-2 are the header and status line; the room itself is rows 3-23. Items, coin
; and player are not in the template: draw_room puts them into SHADOW every frame.
room_screen:
        db "     MSXSYNC  CO-OP  DEMO       "
        db " ITEMS: --------    COINS: 00   "
        db "                                "
        db "################################"
        db "#                              #"
        db "#             ^^^              #"
        db "#                              #"
        db "#      ######      ######      #"
        db "#      #                 #     #"
        db "#      #     ^      ^    #     #"
        db "#                              #"
        db "#   ^         ^              ^ #"
        db "#    ######                    #"
        db "#                              #"
        db "#    ^^                        #"
        db "#         #            #       #"
        db "#         #    ^^^     #       #"
        db "#         ###### ########      #"
        db "#                       ^      #"
        db "#      ^                       #"
        db "#         ^^                   #"
        db "#                              #"
        db "#                              #"
        db "################################"

        ds 8000h - $, 0FFh
