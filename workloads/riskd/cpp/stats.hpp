// The one-line JSON summary printed on shutdown.
#pragma once

#include <string>

#include "server.hpp"

namespace riskd {

// {"lang": "cpp", "requests": N, "malformed": N, "rss_hwm_bytes": N,
//  "malloc_arena_bytes": N, "malloc_in_use_bytes": N}
// A figure that cannot be measured is left out.
std::string shutdown_summary_json(const ServeTotals& totals);

}  // namespace riskd
