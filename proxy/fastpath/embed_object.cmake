# Writes the bytes of IN as a C++ array (tandem::kFastPathBpfObject) to OUT.
file(READ ${IN} hex HEX)
string(LENGTH "${hex}" n)
math(EXPR size "${n} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
string(REGEX REPLACE "(0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,)"
       "\\1\n" bytes "${bytes}")
file(WRITE ${OUT} "// Generated from fastpath.bpf.o by embed_object.cmake; do not edit.\n"
                  "#include <cstddef>\n#include <cstdint>\n"
                  "namespace tandem {\n"
                  "extern const uint8_t kFastPathBpfObject[];\n"
                  "extern const size_t kFastPathBpfObjectSize;\n"
                  "alignas(8) const uint8_t kFastPathBpfObject[] = {\n${bytes}};\n"
                  "const size_t kFastPathBpfObjectSize = ${size};\n"
                  "}  // namespace tandem\n")
