#include "config.hpp"

#include <charconv>
#include <cstdint>
#include <limits>
#include <optional>
#include <thread>

#include "protocol.hpp"

namespace riskd {
namespace {

constexpr std::uint64_t kMaxMerchants = std::uint64_t{1} << 32;  // merchant ids are u32

std::uint64_t parse_u64(std::string_view flag, std::string_view text) {
  std::uint64_t value = 0;
  const char* const end = text.data() + text.size();
  const auto [ptr, ec] = std::from_chars(text.data(), end, value, 10);
  if (text.empty() || ec != std::errc{} || ptr != end) {
    throw UsageError("--" + std::string(flag) + ": not an unsigned 64-bit integer: '" +
                     std::string(text) + "'");
  }
  return value;
}

std::uint64_t parse_in_range(std::string_view flag, std::string_view text, std::uint64_t min,
                             std::uint64_t max) {
  const std::uint64_t value = parse_u64(flag, text);
  if (value < min || value > max) {
    throw UsageError("--" + std::string(flag) + " must be between " + std::to_string(min) +
                     " and " + std::to_string(max) + ", not " + std::to_string(value));
  }
  return value;
}

unsigned default_workers() noexcept {
  const unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : n;
}

}  // namespace

Config parse_args(std::span<const char* const> args) {
  Config config;
  config.workers = default_workers();
  bool have_listen = false;

  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string_view arg = args[i];
    if (arg == "-h" || arg == "--help") {
      config.help = true;
      return config;
    }
    if (!arg.starts_with("--") || arg.size() == 2) {
      throw UsageError("unexpected argument '" + std::string(arg) + "'");
    }
    std::string_view name = arg.substr(2);
    std::optional<std::string_view> inline_value;
    if (const auto eq = name.find('='); eq != std::string_view::npos) {
      inline_value = name.substr(eq + 1);
      name = name.substr(0, eq);
    }
    const auto value = [&]() -> std::string_view {
      if (inline_value) return *inline_value;
      if (i + 1 >= args.size()) throw UsageError("--" + std::string(name) + " needs a value");
      return args[++i];
    };

    constexpr auto kU64Max = std::numeric_limits<std::uint64_t>::max();
    if (name == "listen") {
      config.listen = value();
      have_listen = true;
    } else if (name == "workers") {
      config.workers = static_cast<unsigned>(
          parse_in_range(name, value(), 1, std::numeric_limits<unsigned>::max()));
    } else if (name == "accounts") {
      config.engine.accounts = parse_u64(name, value());
    } else if (name == "window") {
      config.engine.window = parse_in_range(name, value(), 1, std::numeric_limits<std::size_t>::max());
    } else if (name == "merchants") {
      config.engine.merchants = parse_in_range(name, value(), 1, kMaxMerchants);
    } else if (name == "rules") {
      config.engine.rules = parse_in_range(name, value(), 1, protocol::kMaxRules);
    } else if (name == "seed") {
      config.engine.seed = parse_in_range(name, value(), 0, kU64Max);
    } else {
      throw UsageError("unknown flag '--" + std::string(name) + "'");
    }
  }
  if (!have_listen || config.listen.empty()) throw UsageError("--listen HOST:PORT is required");
  return config;
}

std::string_view usage() noexcept {
  return "usage: riskd-cpp --listen HOST:PORT [--workers N] [--accounts A] [--window W]\n"
         "                 [--merchants M] [--rules R] [--seed S]\n"
         "  --listen HOST:PORT  address to listen on (required; port 0 picks a free port)\n"
         "  --workers N         event-loop threads (default: number of CPUs)\n"
         "  --accounts A        accounts pre-loaded with a full window (default 100000)\n"
         "  --window W          transactions kept per account, >= 1 (default 32)\n"
         "  --merchants M       merchant ids used by the pre-load, 1..2^32 (default 10000)\n"
         "  --rules R           number of rules, 1..65535 (default 200)\n"
         "  --seed S            pre-load splitmix64 seed (default 42)\n";
}

}  // namespace riskd
