// RAII ownership of a POSIX file descriptor, plus errno -> exception helper.
#pragma once

#include <unistd.h>

#include <cerrno>
#include <system_error>
#include <utility>

namespace riskd {

class UniqueFd {
 public:
  UniqueFd() noexcept = default;
  explicit UniqueFd(int fd) noexcept : fd_(fd) {}
  UniqueFd(UniqueFd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    if (this != &other) reset(std::exchange(other.fd_, -1));
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() { reset(); }

  [[nodiscard]] int get() const noexcept { return fd_; }
  [[nodiscard]] explicit operator bool() const noexcept { return fd_ >= 0; }

  void reset(int fd = -1) noexcept {
    if (fd_ >= 0) ::close(fd_);  // close(2) releases the descriptor even on EINTR
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

// Throws std::system_error for the current errno; `what` names the failed call.
[[noreturn]] inline void throw_errno(const char* what) {
  throw std::system_error(errno, std::system_category(), what);
}

}  // namespace riskd
