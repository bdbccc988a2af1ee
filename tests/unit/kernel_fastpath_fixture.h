#pragma once
// The fast path program loaded for a test (tests that run it with BPF_PROG_TEST_RUN).

#include <gtest/gtest.h>

#include <unistd.h>

#include <cerrno>
#include <memory>
#include <stdexcept>

#include "proxy/fastpath/kernel_fastpath.h"

namespace tandem::test {

/// Loads the fast path program into fp_ (64 entries), then what loadMore() loads, or skips the
/// test loudly where it cannot run: not root, or a kernel that refuses BPF. Any other load
/// failure fails the test. `Base` is ::testing::Test or a ::testing::TestWithParam; a derived
/// SetUp() calls this one first and returns if the test was skipped or failed.
template <class Base>
class KernelFastPathFixture : public Base {
 protected:
  void SetUp() override {
    if (geteuid() != 0)
      GTEST_SKIP() << "SKIPPED LOUDLY: the BPF program tests need root (CI runs them as root)";
    try {
      fp_ = std::make_unique<KernelFastPath>(64);
      loadMore();
    } catch (const std::runtime_error& e) {
      if (errno == EPERM || errno == ENOSYS)
        GTEST_SKIP() << "SKIPPED LOUDLY: this kernel refuses BPF: " << e.what();
      FAIL() << e.what();
    }
  }

  /// Another program the test needs, loaded after fp_ (std::runtime_error on failure).
  virtual void loadMore() {}

  std::unique_ptr<KernelFastPath> fp_;
};

}  // namespace tandem::test
