#include "net.hpp"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "config.hpp"

namespace riskd {
namespace {

struct HostPort {
  std::string host;  // without brackets; empty = every interface
  std::string port;
};

HostPort split_host_port(std::string_view text) {
  const auto bad = [&](std::string_view why) {
    return UsageError("bad --listen address '" + std::string(text) + "': " + std::string(why));
  };
  HostPort hp;
  std::string_view port;
  if (text.starts_with('[')) {
    const auto close = text.find(']');
    if (close == std::string_view::npos) throw bad("missing ']'");
    if (close + 1 >= text.size() || text[close + 1] != ':') throw bad("missing port");
    hp.host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    const auto colon = text.rfind(':');
    if (colon == std::string_view::npos) throw bad("missing port");
    hp.host = text.substr(0, colon);
    if (hp.host.find(':') != std::string::npos) throw bad("IPv6 addresses go in brackets");
    port = text.substr(colon + 1);
  }
  unsigned value = 0;
  const auto [ptr, ec] = std::from_chars(port.data(), port.data() + port.size(), value, 10);
  if (port.empty() || ec != std::errc{} || ptr != port.data() + port.size() || value > 65535) {
    throw bad("port must be a number 0..65535");
  }
  hp.port = std::to_string(value);
  return hp;
}

struct AddrinfoDeleter {
  void operator()(addrinfo* ai) const noexcept { freeaddrinfo(ai); }
};

void set_int_option(int fd, int level, int option, int value) {
  if (setsockopt(fd, level, option, &value, sizeof value) != 0) throw_errno("setsockopt");
}

}  // namespace

UniqueFd open_listener(std::string_view host_port) {
  const HostPort hp = split_host_port(host_port);

  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* raw = nullptr;
  const int rc = getaddrinfo(hp.host.empty() ? nullptr : hp.host.c_str(), hp.port.c_str(), &hints, &raw);
  if (rc != 0) {
    throw UsageError("bad --listen address '" + std::string(host_port) + "': " + gai_strerror(rc));
  }
  const std::unique_ptr<addrinfo, AddrinfoDeleter> results(raw);

  std::vector<const addrinfo*> candidates;
  for (const addrinfo* ai = results.get(); ai != nullptr; ai = ai->ai_next) candidates.push_back(ai);
  if (hp.host.empty()) {
    // Every interface: prefer one dual-stack IPv6 socket, as Go and Rust do.
    std::stable_partition(candidates.begin(), candidates.end(),
                          [](const addrinfo* ai) { return ai->ai_family == AF_INET6; });
  }

  std::string last_error = "no usable address";
  for (const addrinfo* ai : candidates) {
    UniqueFd fd(socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol));
    if (!fd) {
      last_error = std::strerror(errno);
      continue;
    }
    set_int_option(fd.get(), SOL_SOCKET, SO_REUSEADDR, 1);
    if (ai->ai_family == AF_INET6 && hp.host.empty()) set_int_option(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, 0);
    if (bind(fd.get(), ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd.get(), SOMAXCONN) != 0) {
      last_error = std::strerror(errno);
      continue;
    }
    return fd;
  }
  throw UsageError("bad --listen address '" + std::string(host_port) + "': " + last_error);
}

std::string local_address(int fd) {
  sockaddr_storage addr{};
  socklen_t len = sizeof addr;
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) throw_errno("getsockname");

  char host[INET6_ADDRSTRLEN] = {};
  std::uint16_t port = 0;
  if (addr.ss_family == AF_INET6) {
    const auto& in6 = reinterpret_cast<const sockaddr_in6&>(addr);
    inet_ntop(AF_INET6, &in6.sin6_addr, host, sizeof host);
    port = ntohs(in6.sin6_port);
    return "[" + std::string(host) + "]:" + std::to_string(port);
  }
  const auto& in4 = reinterpret_cast<const sockaddr_in&>(addr);
  inet_ntop(AF_INET, &in4.sin_addr, host, sizeof host);
  port = ntohs(in4.sin_port);
  return std::string(host) + ":" + std::to_string(port);
}

}  // namespace riskd
