// riskd-cpp: the C++ implementation of riskd, the fraud/risk decision server
// specified in ../PROTOCOL.md.
//
//   riskd-cpp --listen HOST:PORT [--workers N] [--accounts A] [--window W]
//             [--merchants M] [--rules R] [--seed S]
//
// Exit status: 0 after a SIGTERM/SIGINT shutdown (or --help), 2 for a bad
// command line or listen address, 1 for any other failure.

#include <pthread.h>

#include <csignal>
#include <cstdio>
#include <exception>
#include <span>
#include <string>
#include <string_view>

#include "config.hpp"
#include "engine.hpp"
#include "net.hpp"
#include "server.hpp"
#include "stats.hpp"

namespace {

// Blocks SIGINT and SIGTERM in this thread and, by inheritance, in every thread
// started later; the Server reads them from a signalfd. Blocking them first
// thing means a signal during the pre-load still ends in a clean shutdown.
void block_shutdown_signals() {
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &mask, nullptr);
  std::signal(SIGPIPE, SIG_IGN);  // a vanished client is an error return, not a signal
}

void print_usage(std::FILE* stream) {
  const std::string_view text = riskd::usage();
  std::fwrite(text.data(), 1, text.size(), stream);
}

void print_line(const std::string& line) {
  std::fputs(line.c_str(), stdout);
  std::fputc('\n', stdout);
  std::fflush(stdout);
}

int run(const riskd::Config& config) {
  // Listen before the (slow) pre-load so that an unusable address is reported
  // at once; connections made meanwhile wait in the backlog.
  riskd::UniqueFd listener = riskd::open_listener(config.listen);
  const std::string address = riskd::local_address(listener.get());

  riskd::RiskEngine engine(config.engine);
  riskd::Server server(std::move(listener), config.workers, engine);
  print_line("READY riskd-cpp listen=" + address +
             " accounts=" + std::to_string(config.engine.accounts) +
             " window=" + std::to_string(config.engine.window) +
             " rules=" + std::to_string(config.engine.rules));

  const riskd::ServeTotals totals = server.run();
  // Measured while the account state is still alive.
  print_line(riskd::shutdown_summary_json(totals));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  block_shutdown_signals();
  try {
    const riskd::Config config =
        riskd::parse_args(std::span<const char* const>(argv + 1, static_cast<std::size_t>(argc - 1)));
    if (config.help) {
      print_usage(stdout);
      return 0;
    }
    return run(config);
  } catch (const riskd::UsageError& e) {
    std::fprintf(stderr, "riskd-cpp: %s\n", e.what());
    print_usage(stderr);
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "riskd-cpp: fatal: %s\n", e.what());
    return 1;
  }
}
