#include "stats.hpp"

#include <malloc.h>

#include <cstdint>
#include <fstream>
#include <optional>
#include <sstream>
#include <string_view>

namespace riskd {
namespace {

// Peak resident set size: VmHWM in /proc/self/status ("VmHWM:   123456 kB").
std::optional<std::uint64_t> peak_rss_bytes() {
  constexpr std::string_view kKey = "VmHWM:";
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (!line.starts_with(kKey)) continue;
    std::istringstream fields(line.substr(kKey.size()));
    std::uint64_t kib = 0;
    std::string unit;
    if (fields >> kib >> unit && unit == "kB") return kib * 1024;
    return std::nullopt;
  }
  return std::nullopt;
}

void append_field(std::string& json, std::string_view key, std::uint64_t value) {
  json += ", \"";
  json += key;
  json += "\": ";
  json += std::to_string(value);
}

}  // namespace

std::string shutdown_summary_json(const ServeTotals& totals) {
  std::string json = R"({"lang": "cpp")";
  append_field(json, "requests", totals.requests);
  append_field(json, "malformed", totals.malformed);
  if (const auto rss = peak_rss_bytes()) append_field(json, "rss_hwm_bytes", *rss);

  // glibc sums these over all arenas. Chunks too large for an arena are
  // mmap()ed separately (hblkhd); they are part of both figures. An allocator
  // that replaces glibc's (e.g. under AddressSanitizer) reports zeros: left out.
  const struct mallinfo2 info = mallinfo2();
  if (info.arena + info.hblkhd > 0) {
    append_field(json, "malloc_arena_bytes", info.arena + info.hblkhd);      // obtained from the OS
    append_field(json, "malloc_in_use_bytes", info.uordblks + info.hblkhd);  // in live allocations
  }
  json += "}";
  return json;
}

}  // namespace riskd
