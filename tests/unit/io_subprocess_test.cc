// runProcess: stdin fed, stdout and stderr captured, exit codes, failures to start.
#include "proxy/io/subprocess.h"

#include <gtest/gtest.h>

#include <system_error>

namespace tandem {
namespace {

TEST(SubprocessTest, FeedsStdinAndCapturesStdout) {
  ProcessResult r = runProcess({"cat"}, "hello\nworld\n");
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.out, "hello\nworld\n");
  EXPECT_EQ(r.err, "");
}

TEST(SubprocessTest, LargeInputAndOutputDoNotDeadlock) {
  const std::string big(1 << 20, 'x');  // far beyond a pipe buffer both ways
  ProcessResult r = runProcess({"cat"}, big);
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.out.size(), big.size());
}

TEST(SubprocessTest, CapturesStderrAndExitCode) {
  ProcessResult r = runProcess({"sh", "-c", "echo oops >&2; exit 3"}, "");
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_EQ(r.err, "oops\n");
}

TEST(SubprocessTest, ChildIgnoringInputIsNoSigpipe) {
  // The child exits at once; writing 1 MiB to its stdin must not kill the test with SIGPIPE.
  ProcessResult r = runProcess({"true"}, std::string(1 << 20, 'x'));
  EXPECT_EQ(r.exit_code, 0);
}

TEST(SubprocessTest, MissingProgramThrows) {
  EXPECT_THROW(runProcess({"tandem-no-such-program"}, ""), std::system_error);
}

}  // namespace
}  // namespace tandem
