// Socket helpers: the listening socket and address formatting.
#pragma once

#include <string>
#include <string_view>

#include "unique_fd.hpp"

namespace riskd {

// Resolves HOST:PORT ("[v6addr]:PORT" for IPv6, empty HOST for every interface)
// and returns a bound, listening, non-blocking TCP socket. Throws UsageError when
// the address is malformed, does not resolve or cannot be bound.
UniqueFd open_listener(std::string_view host_port);

// The socket's local address as HOST:PORT ("[v6addr]:PORT" for IPv6).
std::string local_address(int fd);

}  // namespace riskd
