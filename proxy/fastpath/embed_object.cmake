# Writes the bytes of IN as a C++ array (tandem::${SYM}, default kFastPathBpfObject) to OUT.
if(NOT SYM)
  set(SYM kFastPathBpfObject)
endif()
file(READ ${IN} hex HEX)
string(LENGTH "${hex}" n)
math(EXPR size "${n} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
string(REGEX REPLACE "(0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,)"
       "\\1\n" bytes "${bytes}")
file(WRITE ${OUT} "// Generated from ${IN} by embed_object.cmake; do not edit.\n"
                  "#include <cstddef>\n#include <cstdint>\n"
                  "namespace tandem {\n"
                  "extern const uint8_t ${SYM}[];\n"
                  "extern const size_t ${SYM}Size;\n"
                  "alignas(8) const uint8_t ${SYM}[] = {\n${bytes}};\n"
                  "const size_t ${SYM}Size = ${size};\n"
                  "}  // namespace tandem\n")
