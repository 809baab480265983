#include "server.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/socket.h>

#include <array>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <exception>
#include <mutex>
#include <span>
#include <stop_token>
#include <thread>
#include <unordered_map>
#include <utility>

#include "protocol.hpp"

namespace riskd {
namespace {

constexpr int kMaxEvents = 256;
constexpr int kAcceptRetryMs = 100;  // back-off after running out of descriptors
constexpr std::size_t kReadBufferSize = 8192;
static_assert(kReadBufferSize > protocol::kMaxFrame, "a whole frame must fit in the read buffer");

UniqueFd make_epoll() {
  UniqueFd fd(epoll_create1(EPOLL_CLOEXEC));
  if (!fd) throw_errno("epoll_create1");
  return fd;
}

void epoll_add(int epoll_fd, int fd, std::uint32_t events, epoll_data_t data) {
  epoll_event ev{};
  ev.events = events;
  ev.data = data;
  if (epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, &ev) != 0) throw_errno("epoll_ctl(ADD)");
}

epoll_data_t data_fd(int fd) {
  epoll_data_t data{};
  data.fd = fd;
  return data;
}

epoll_data_t data_ptr(void* ptr) {
  epoll_data_t data{};
  data.ptr = ptr;
  return data;
}

}  // namespace

// ---------------------------------------------------------------------------
// Worker: one thread, one epoll instance, the connections handed to it.

class Worker {
 public:
  explicit Worker(RiskEngine& engine)
      : engine_(engine), epoll_(make_epoll()), wake_(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {
    if (!wake_) throw_errno("eventfd");
    epoll_add(epoll_.get(), wake_.get(), EPOLLIN, data_ptr(nullptr));
    thread_ = std::jthread([this](std::stop_token stop) { run(stop); });
  }
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;
  ~Worker() = default;  // std::jthread requests stop and joins

  // Called from the acceptor thread.
  void adopt(UniqueFd connection) {
    {
      const std::lock_guard lock(inbox_mutex_);
      inbox_.push_back(std::move(connection));
    }
    wake();
  }

  void request_stop() { thread_.request_stop(); }  // the stop callback wakes the loop

  // Joins the thread and returns its totals.
  ServeTotals join() {
    if (thread_.joinable()) thread_.join();
    return totals_;
  }

 private:
  struct Connection {
    explicit Connection(UniqueFd socket) : fd(std::move(socket)) {}
    UniqueFd fd;
    std::array<std::uint8_t, kReadBufferSize> in{};
    std::size_t in_len = 0;          // bytes buffered in `in`
    std::vector<std::uint8_t> out;   // encoded responses not yet sent
    std::size_t out_sent = 0;        // prefix of `out` already sent
    bool writing = false;            // waiting for EPOLLOUT instead of EPOLLIN
  };

  enum class Outcome { kKeep, kClose, kMalformed };

  void wake() noexcept {
    // Cannot fail short of a counter overflow, which a wake-up does not care about.
    (void)eventfd_write(wake_.get(), 1);
  }

  void run(std::stop_token stop) {
    const std::stop_callback on_stop(stop, [this] { wake(); });
    std::array<epoll_event, kMaxEvents> events{};
    while (!stop.stop_requested()) {
      const int n = epoll_wait(epoll_.get(), events.data(), kMaxEvents, -1);
      if (n < 0) {
        if (errno == EINTR) continue;
        throw_errno("epoll_wait");  // a broken epoll instance is a bug: terminate
      }
      bool woken = false;
      for (const epoll_event& ev : std::span(events.data(), static_cast<std::size_t>(n))) {
        if (ev.data.ptr == nullptr) {
          woken = true;
        } else {
          dispatch(*static_cast<Connection*>(ev.data.ptr), ev.events);
        }
      }
      // New connections are registered after the batch: no event in it can
      // refer to them, and a connection closed above cannot be referred to twice.
      if (woken) {
        eventfd_t ignored = 0;
        (void)eventfd_read(wake_.get(), &ignored);
        adopt_inbox();
      }
    }
    connections_.clear();  // closes every connection
    const std::lock_guard lock(inbox_mutex_);
    inbox_.clear();
  }

  void adopt_inbox() {
    std::vector<UniqueFd> fresh;
    {
      const std::lock_guard lock(inbox_mutex_);
      fresh.swap(inbox_);
    }
    for (UniqueFd& fd : fresh) {
      const int raw = fd.get();
      auto connection = std::make_unique<Connection>(std::move(fd));
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.ptr = connection.get();
      if (epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, raw, &ev) != 0) {
        std::fprintf(stderr, "riskd-cpp: epoll_ctl(ADD): %s; dropping connection\n", std::strerror(errno));
        continue;  // `connection` closes the socket
      }
      connections_.emplace(raw, std::move(connection));
    }
  }

  void dispatch(Connection& c, std::uint32_t events) {
    Outcome outcome = Outcome::kKeep;
    try {
      if (c.writing) {
        if (events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) outcome = on_writable(c);
      } else {
        outcome = on_readable(c);
      }
    } catch (const std::exception& e) {  // e.g. std::bad_alloc: drop this connection only
      std::fprintf(stderr, "riskd-cpp: dropping connection: %s\n", e.what());
      outcome = Outcome::kClose;
    }
    if (outcome != Outcome::kKeep) close(c, outcome);
  }

  Outcome on_readable(Connection& c) {
    ssize_t n = 0;
    do {
      n = recv(c.fd.get(), c.in.data() + c.in_len, c.in.size() - c.in_len, 0);
    } while (n < 0 && errno == EINTR);
    if (n < 0) return (errno == EAGAIN || errno == EWOULDBLOCK) ? Outcome::kKeep : Outcome::kClose;
    // End of stream: clean between frames, truncated (= malformed) inside one.
    if (n == 0) return c.in_len == 0 ? Outcome::kClose : Outcome::kMalformed;
    c.in_len += static_cast<std::size_t>(n);

    if (!serve_frames(c)) {
      flush(c);  // best effort: answers to earlier (pipelined) requests still go out
      return Outcome::kMalformed;
    }
    return flush_or_wait(c);
  }

  Outcome on_writable(Connection& c) {
    const Outcome outcome = flush_or_wait(c);
    if (outcome == Outcome::kKeep && !c.writing) set_interest(c, EPOLLIN);
    return outcome;
  }

  // Answers every complete frame in the read buffer and keeps the incomplete
  // rest. False when a frame is malformed.
  bool serve_frames(Connection& c) {
    const std::span<const std::uint8_t> buffered(c.in.data(), c.in_len);
    std::size_t pos = 0;
    while (buffered.size() - pos >= protocol::kHeaderSize) {
      const std::uint32_t length =
          protocol::frame_length(buffered.subspan(pos).first<protocol::kHeaderSize>());
      if (!protocol::valid_frame_length(length)) return false;
      if (buffered.size() - pos - protocol::kHeaderSize < length) break;  // incomplete
      const auto txn = protocol::decode_txn(buffered.subspan(pos + protocol::kHeaderSize, length));
      if (!txn) return false;
      protocol::append_decision_frame(c.out, engine_.decide(*txn));
      ++totals_.requests;
      pos += protocol::kHeaderSize + length;
    }
    c.in_len -= pos;
    if (c.in_len > 0 && pos > 0) std::memmove(c.in.data(), c.in.data() + pos, c.in_len);
    return true;
  }

  enum class FlushResult { kDone, kPending, kError };

  FlushResult flush(Connection& c) {
    while (c.out_sent < c.out.size()) {
      const ssize_t n = send(c.fd.get(), c.out.data() + c.out_sent, c.out.size() - c.out_sent, MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return FlushResult::kPending;
        return FlushResult::kError;
      }
      c.out_sent += static_cast<std::size_t>(n);
    }
    c.out.clear();
    c.out_sent = 0;
    return FlushResult::kDone;
  }

  // Sends what it can. If the socket is full, stops reading from the client
  // (bounding the output buffer) until EPOLLOUT says the rest can be sent.
  Outcome flush_or_wait(Connection& c) {
    switch (flush(c)) {
      case FlushResult::kDone:
        c.writing = false;
        return Outcome::kKeep;
      case FlushResult::kPending:
        if (!c.writing) set_interest(c, EPOLLOUT);
        c.writing = true;
        return Outcome::kKeep;
      case FlushResult::kError:
        break;
    }
    return Outcome::kClose;
  }

  void set_interest(Connection& c, std::uint32_t events) {
    epoll_event ev{};
    ev.events = events;
    ev.data.ptr = &c;
    if (epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, c.fd.get(), &ev) != 0) throw_errno("epoll_ctl(MOD)");
  }

  void close(Connection& c, Outcome outcome) {
    if (outcome == Outcome::kMalformed) ++totals_.malformed;
    connections_.erase(c.fd.get());  // destroys `c`; closing the socket removes it from epoll
  }

  RiskEngine& engine_;
  UniqueFd epoll_;
  UniqueFd wake_;
  std::mutex inbox_mutex_;
  std::vector<UniqueFd> inbox_;  // accepted, not yet registered; guarded by inbox_mutex_
  std::unordered_map<int, std::unique_ptr<Connection>> connections_;  // worker thread only
  ServeTotals totals_;           // worker thread only; read after join()
  std::jthread thread_;          // last member: started last, stopped and joined first
};

// ---------------------------------------------------------------------------
// Server: the acceptor.

Server::Server(UniqueFd listener, unsigned workers, RiskEngine& engine)
    : listener_(std::move(listener)), epoll_(make_epoll()) {
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGTERM);
  signals_.reset(signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC));
  if (!signals_) throw_errno("signalfd");
  epoll_add(epoll_.get(), signals_.get(), EPOLLIN, data_fd(signals_.get()));
  epoll_add(epoll_.get(), listener_.get(), EPOLLIN, data_fd(listener_.get()));

  workers_.reserve(workers);
  for (unsigned i = 0; i < workers; ++i) workers_.push_back(std::make_unique<Worker>(engine));
}

Server::~Server() = default;

ServeTotals Server::run() {
  std::array<epoll_event, 8> events{};
  bool stopping = false;
  while (!stopping) {
    const int n = epoll_wait(epoll_.get(), events.data(), static_cast<int>(events.size()),
                             accept_paused_ ? kAcceptRetryMs : -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno("epoll_wait");
    }
    if (accept_paused_) resume_accepting();
    for (const epoll_event& ev : std::span(events.data(), static_cast<std::size_t>(n))) {
      if (ev.data.fd == signals_.get()) {
        signalfd_siginfo info{};
        while (read(signals_.get(), &info, sizeof info) == static_cast<ssize_t>(sizeof info)) {
          stopping = true;
        }
      } else if (ev.data.fd == listener_.get()) {
        accept_pending();
      }
    }
  }

  listener_.reset();  // stop accepting
  for (auto& worker : workers_) worker->request_stop();
  ServeTotals totals;
  for (auto& worker : workers_) {
    const ServeTotals t = worker->join();
    totals.requests += t.requests;
    totals.malformed += t.malformed;
  }
  return totals;
}

void Server::accept_pending() {
  for (;;) {
    UniqueFd connection(accept4(listener_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
    if (!connection) {
      switch (errno) {
        case EAGAIN:
#if EWOULDBLOCK != EAGAIN
        case EWOULDBLOCK:
#endif
          return;
        case EMFILE:
        case ENFILE:
        case ENOBUFS:
        case ENOMEM:
          std::fprintf(stderr, "riskd-cpp: accept: %s; pausing %d ms\n", std::strerror(errno), kAcceptRetryMs);
          pause_accepting();
          return;
        case EINTR:
        case ECONNABORTED:
        case EPERM:  // refused by a firewall rule
        // Network errors already pending on the new socket: accept(2) says to
        // treat them like EAGAIN and retry.
        case ENETDOWN:
        case EPROTO:
        case ENOPROTOOPT:
        case EHOSTDOWN:
        case ENONET:
        case EHOSTUNREACH:
        case EOPNOTSUPP:
        case ENETUNREACH:
          continue;
        default:
          throw_errno("accept4");
      }
    }
    const int one = 1;
    (void)setsockopt(connection.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);  // latency only
    workers_[next_worker_]->adopt(std::move(connection));
    next_worker_ = (next_worker_ + 1) % workers_.size();
  }
}

void Server::pause_accepting() {
  if (epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, listener_.get(), nullptr) != 0) throw_errno("epoll_ctl(DEL)");
  accept_paused_ = true;
}

void Server::resume_accepting() {
  epoll_add(epoll_.get(), listener_.get(), EPOLLIN, data_fd(listener_.get()));
  accept_paused_ = false;
}

}  // namespace riskd
