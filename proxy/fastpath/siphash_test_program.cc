// SipHashTestProgram (kernel_syncookie.h): a test-only loader, linked into the unit tests only.
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "proxy/fastpath/bpf_util.h"
#include "proxy/fastpath/kernel_syncookie.h"

namespace tandem {

extern const uint8_t kSipHashTestBpfObject[];
extern const size_t kSipHashTestBpfObjectSize;

struct SipHashTestProgram::Impl {
  bpf_object* obj = nullptr;
  int prog_fd = -1;
  ~Impl() {
    if (obj) bpf_object__close(obj);
  }
};

SipHashTestProgram::SipHashTestProgram() : impl_(std::make_unique<Impl>()) {
  impl_->obj = bpf_object__open_mem(kSipHashTestBpfObject, kSipHashTestBpfObjectSize, nullptr);
  if (impl_->obj == nullptr) throw std::runtime_error("siphash test program: open failed");
  if (bpf_object__load(impl_->obj) != 0)
    throw std::runtime_error(std::string("siphash test program: load failed: ") +
                             std::strerror(errno));
  bpf_program* prog = bpf_object__find_program_by_name(impl_->obj, "tandem_siphash_test");
  if (prog == nullptr) throw std::runtime_error("siphash test program: no program");
  impl_->prog_fd = bpf_program__fd(prog);
}

SipHashTestProgram::~SipHashTestProgram() = default;

bool SipHashTestProgram::hash(const uint8_t (&key)[16], const uint8_t* msg, size_t len,
                              uint64_t& out) noexcept {
  if (len > 64) return false;
  std::vector<uint8_t> in(14 + 16 + 1 + 64, 0);
  in[12] = 0x08;
  std::memcpy(&in[14], key, 16);
  in[30] = static_cast<uint8_t>(len);
  if (len > 0) std::memcpy(&in[31], msg, len);
  if (bpfutil::testRun(impl_->prog_fd, in) != 0 || in.size() < 14 + 8) return false;
  out = 0;
  for (int i = 0; i < 8; ++i) out |= uint64_t{in[14 + static_cast<size_t>(i)]} << (8 * i);
  return true;
}

}  // namespace tandem
