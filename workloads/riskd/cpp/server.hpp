// The network side of riskd: one acceptor (the calling thread) hands accepted
// connections round-robin to N worker threads, each running its own epoll loop.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "engine.hpp"
#include "unique_fd.hpp"

namespace riskd {

struct ServeTotals {
  std::uint64_t requests = 0;   // requests answered
  std::uint64_t malformed = 0;  // connections dropped for a malformed or truncated frame
};

class Worker;

class Server {
 public:
  // Takes a listening, non-blocking socket and starts `workers` threads.
  // SIGINT and SIGTERM must already be blocked in the calling thread (so that
  // every thread inherits the mask); Server receives them through a signalfd.
  Server(UniqueFd listener, unsigned workers, RiskEngine& engine);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Accepts connections until SIGINT or SIGTERM, then stops accepting, closes
  // every connection, joins the workers and returns their totals.
  ServeTotals run();

 private:
  void accept_pending();
  void pause_accepting();
  void resume_accepting();

  UniqueFd listener_;
  UniqueFd epoll_;
  UniqueFd signals_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::size_t next_worker_ = 0;
  bool accept_paused_ = false;
};

}  // namespace riskd
