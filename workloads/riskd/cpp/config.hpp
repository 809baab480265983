// Command line of riskd-cpp (see "Command line" in ../PROTOCOL.md).
#pragma once

#include <span>
#include <stdexcept>
#include <string>
#include <string_view>

#include "engine.hpp"

namespace riskd {

// A bad command line; main() reports it and exits with status 2.
class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct Config {
  std::string listen;    // HOST:PORT
  unsigned workers = 1;  // event-loop threads
  EngineParams engine;
  bool help = false;     // -h / --help: print usage and exit 0
};

// Parses the arguments after the program name. Accepts `--flag value` and
// `--flag=value`; a repeated flag keeps its last value. Throws UsageError.
Config parse_args(std::span<const char* const> args);

std::string_view usage() noexcept;

}  // namespace riskd
