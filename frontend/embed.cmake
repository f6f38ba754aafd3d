# Writes the bytes of IN as a NUL-terminated C char array `kiln_prelude`
# into OUT (an array, because C11 string literals may be limited to 4095).
file(READ ${IN} hex HEX)
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
string(REGEX REPLACE "((0x[0-9a-f][0-9a-f],){16})" "\\1\n  " bytes "${bytes}")
file(WRITE ${OUT} "/* Generated from prelude.kiln by embed.cmake; do not edit. */\nconst char kiln_prelude[] = {\n  ${bytes}0x00};\n")
