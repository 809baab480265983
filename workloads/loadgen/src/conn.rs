//! One connection = one OS thread with a blocking socket.
//!
//! Why threads and not an async runtime: with pipelining off each connection has at
//! most one request in flight, so a thread per connection is the simplest correct
//! model (send, block in read, repeat), costs ~3 syscalls per request, and — the
//! deciding point — gives microsecond control over *when* a request leaves.
//! Runtimes such as tokio have a 1 ms timer wheel; sleeping until an intended send
//! time with them adds up to a millisecond of client-made "latency" (wrk2 has the
//! same problem). Here each thread sleeps with the kernel's high-resolution timer
//! (timer slack set to 1 ns) until shortly before the intended time and then spins
//! the last few microseconds; the lead is learned per thread from the observed
//! oversleep, so the spinning costs little CPU on the 2-core machines we share with
//! the server. The schedule lag (actual minus intended send time) is itself recorded
//! and reported, so the claim "the client did not create latency" is checked on
//! every run.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::proto::{MAX_PAYLOAD, REQ_FRAME_LEN, TxnGen, check_decision};

/// Latencies are recorded in microseconds, 3 significant digits, up to 60 s
/// (larger values are clamped to 60 s; they are counted as timeouts long before).
pub const HIGHEST_US: u64 = 60_000_000;

/// After the end of the measured period, slots later than this are not sent any more.
const END_GRACE: Duration = Duration::from_millis(10);

pub fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIGHEST_US, 3).expect("valid histogram bounds")
}

#[derive(Clone, Copy, Debug)]
pub enum Mode {
    /// Fixed total rate, requests per second.
    Open(f64),
    /// Closed loop, as fast as answers come back.
    Max,
}

pub struct Plan {
    pub addr: SocketAddr,
    pub mode: Mode,
    pub connections: usize,
    pub t0: Instant,
    pub warm_end: Instant,
    pub t_end: Instant,
    pub timeout: Duration,
    pub n_intervals: usize,
    pub accounts: u64,
    pub merchants: u64,
    pub seed: u64,
}

/// One finished (per-thread) interval histogram pair, sent to the main thread, which
/// merges them per second.
pub struct IntervalMsg {
    pub idx: usize,
    pub corrected: Histogram<u64>,
    pub uncorrected: Histogram<u64>,
}

pub struct ConnResult {
    pub corrected: Histogram<u64>,
    pub uncorrected: Histogram<u64>,
    /// actual send time minus intended send time, us (open loop only).
    pub send_lag: Histogram<u64>,
    /// The client's own lateness: actual minus intended send time for the requests
    /// whose connection was idle before their intended time (so not held back by a
    /// slow previous answer), us. This is what the client adds to corrected latency.
    pub wake_lag: Histogram<u64>,
    pub sent: u64,
    /// Measured-period slots that were attempted (sent, or failed to connect).
    pub attempted: u64,
    pub responses: u64,
    pub errors: u64,
    pub timeouts: u64,
    /// Scheduled in the measured period but never sent (client fell behind at the end).
    pub unsent: u64,
    pub decisions: [u64; 3],
    pub first_error: Option<String>,
}

enum Failure {
    Timeout,
    Error(String),
}

/// A connected socket plus its receive buffer.
struct Conn {
    stream: TcpStream,
    buf: Box<[u8; 4 + MAX_PAYLOAD]>,
    timeout: Duration,
}

pub fn connect(addr: &SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(addr, timeout)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    Ok(s)
}

impl Conn {
    fn new(stream: TcpStream, timeout: Duration) -> Self {
        Conn {
            stream,
            buf: Box::new([0u8; 4 + MAX_PAYLOAD]),
            timeout,
        }
    }

    /// Send one request and wait for its answer. The socket's read timeout is the
    /// request timeout, so a silent server costs at most `timeout`.
    fn exchange(&mut self, req: &[u8], id: u64, sent_at: Instant) -> Result<u8, Failure> {
        if let Err(e) = self.stream.write_all(req) {
            return Err(classify(e, "send"));
        }
        let mut have = 0usize;
        let mut shortened = false;
        let result = loop {
            match self.stream.read(&mut self.buf[have..]) {
                Ok(0) => break Err(Failure::Error("connection closed by server".into())),
                Ok(n) => have += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => break Err(classify(e, "receive")),
            }
            if have >= 4 {
                let len = u32::from_be_bytes(self.buf[0..4].try_into().expect("4 bytes")) as usize;
                if len == 0 || len > MAX_PAYLOAD {
                    break Err(Failure::Error(format!("bad frame length {len}")));
                }
                if have >= 4 + len {
                    if have > 4 + len {
                        break Err(Failure::Error("unsolicited bytes after the answer".into()));
                    }
                    break check_decision(&self.buf[4..4 + len], id)
                        .map_err(|m| Failure::Error(m.to_string()));
                }
            }
            // Partial frame: keep waiting, but only for what is left of the timeout.
            let left = self.timeout.saturating_sub(sent_at.elapsed());
            if left.is_zero() {
                break Err(Failure::Timeout);
            }
            shortened = true;
            let _ = self.stream.set_read_timeout(Some(left));
        };
        if shortened {
            let _ = self.stream.set_read_timeout(Some(self.timeout));
        }
        result
    }
}

fn classify(e: io::Error, what: &str) -> Failure {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Failure::Timeout,
        _ => Failure::Error(format!("{what}: {e}")),
    }
}

/// Sleeps until an instant with microsecond precision at little CPU cost: kernel
/// sleep until `lead` before the target, then spin. `lead` follows the oversleep
/// this thread actually observes (an exponentially weighted mean plus a margin,
/// bounded to [10 us, 200 us]), so a quiet machine spins ~10-20 us per request and a
/// busy one wakes earlier instead of sending late.
struct Sleeper {
    over_ewma_ns: f64,
}

impl Sleeper {
    fn new() -> Self {
        Sleeper {
            over_ewma_ns: 50_000.0,
        }
    }

    fn lead(&self) -> Duration {
        let ns = (self.over_ewma_ns * 1.2 + 5_000.0).clamp(10_000.0, 200_000.0);
        Duration::from_nanos(ns as u64)
    }

    fn sleep_until(&mut self, target: Instant) {
        let now = Instant::now();
        if target <= now {
            return;
        }
        let lead = self.lead();
        if target - now > lead + Duration::from_micros(20) {
            let wake = target - lead;
            std::thread::sleep(wake - now);
            let over = Instant::now().saturating_duration_since(wake).as_nanos() as f64;
            // Clip single outliers (preemption) so they do not blow up the lead.
            let over = over.min(200_000.0);
            self.over_ewma_ns += (over - self.over_ewma_ns) * 0.05;
        }
        loop {
            let now = Instant::now();
            if now >= target {
                return;
            }
            if target - now > Duration::from_micros(30) {
                // Far enough away to let another runnable thread (maybe the server) go first.
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
    }
}

fn set_timer_slack() {
    // SAFETY: prctl(PR_SET_TIMERSLACK) only changes this thread's timer slack.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0);
    }
}

fn us(d: Duration) -> u64 {
    d.as_micros().min(u128::from(HIGHEST_US)) as u64
}

/// The loop of connection `c`.
pub fn run(c: usize, plan: Arc<Plan>, stream: TcpStream, tx: Sender<IntervalMsg>) -> ConnResult {
    set_timer_slack();
    let p = &*plan;
    let mut conn = Some(Conn::new(stream, p.timeout));
    let mut txn = TxnGen::new(p.seed, c, p.accounts, p.merchants);
    let mut sleeper = Sleeper::new();
    let mut req = [0u8; REQ_FRAME_LEN];
    let mut res = ConnResult {
        corrected: new_hist(),
        uncorrected: new_hist(),
        send_lag: new_hist(),
        wake_lag: new_hist(),
        sent: 0,
        attempted: 0,
        responses: 0,
        errors: 0,
        timeouts: 0,
        unsent: 0,
        decisions: [0; 3],
        first_error: None,
    };
    let mut cur_idx = 0usize;
    let mut cur_corr = new_hist();
    let mut cur_unc = new_hist();
    let n = p.connections as u64;
    let mut k: u64 = 0;

    loop {
        let mut slept = false;
        // 1. When should this request leave?
        let intended = match p.mode {
            Mode::Open(rate) => {
                let slot = k * n + c as u64;
                let intended = p.t0 + Duration::from_secs_f64(slot as f64 / rate);
                if intended >= p.t_end {
                    break;
                }
                let now = Instant::now();
                if now >= p.t_end && now - intended > END_GRACE {
                    // Behind schedule at the end: the rest of the measured slots were
                    // never sent; report them instead of stretching the run. (A slot
                    // that is only a little late, e.g. due just before the end while
                    // the previous answer arrived just after it, is still sent.)
                    let mut kk = k;
                    loop {
                        let t = p.t0 + Duration::from_secs_f64((kk * n + c as u64) as f64 / rate);
                        if t >= p.t_end {
                            break;
                        }
                        if t >= p.warm_end {
                            res.unsent += 1;
                        }
                        kk += 1;
                    }
                    break;
                }
                slept = Instant::now() < intended;
                sleeper.sleep_until(intended);
                intended
            }
            Mode::Max => {
                let now = Instant::now();
                if now >= p.t_end {
                    break;
                }
                now
            }
        };
        k += 1;
        let measured = intended >= p.warm_end;
        if measured && matches!(p.mode, Mode::Open(_)) {
            res.attempted += 1;
        }

        // 2. (Re)connect if the previous request failed.
        if conn.is_none() {
            match connect(&p.addr, p.timeout) {
                Ok(s) => {
                    conn = Some(Conn::new(s, p.timeout));
                    slept = false; // connecting took part of the lag
                }
                Err(e) => {
                    if measured {
                        res.errors += 1;
                        res.first_error
                            .get_or_insert_with(|| format!("connect: {e}"));
                    }
                    if matches!(p.mode, Mode::Max) {
                        // Do not spin on a dead server in closed-loop mode.
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    continue;
                }
            }
        }
        let cn = conn.as_mut().expect("connected");

        // 3. Send and wait.
        let ts_ms = 32_000 + intended.saturating_duration_since(p.t0).as_millis() as u64;
        let id = txn.fill(ts_ms, &mut req);
        let sent_at = Instant::now();
        let (intended, measured) = match p.mode {
            Mode::Open(_) => (intended, measured),
            Mode::Max => (sent_at, sent_at >= p.warm_end),
        };
        if measured {
            res.sent += 1;
            if matches!(p.mode, Mode::Open(_)) {
                let lag = us(sent_at.saturating_duration_since(intended));
                res.send_lag.saturating_record(lag);
                if slept {
                    res.wake_lag.saturating_record(lag);
                }
            }
        }
        let outcome = cn.exchange(&req, id, sent_at);
        let done = Instant::now();

        // 4. Account for it. Errors and timeouts are counts, never latencies.
        match outcome {
            Ok(decision) if done - sent_at <= p.timeout => {
                if measured {
                    let corr = us(done - intended);
                    let unc = us(done - sent_at);
                    res.corrected.saturating_record(corr);
                    res.uncorrected.saturating_record(unc);
                    res.responses += 1;
                    res.decisions[decision as usize] += 1;
                    let idx = (((done - p.warm_end).as_nanos() / 1_000_000_000) as usize)
                        .min(p.n_intervals - 1);
                    if idx != cur_idx {
                        if !cur_corr.is_empty() {
                            let _ = tx.send(IntervalMsg {
                                idx: cur_idx,
                                corrected: std::mem::replace(&mut cur_corr, new_hist()),
                                uncorrected: std::mem::replace(&mut cur_unc, new_hist()),
                            });
                        }
                        cur_idx = idx;
                    }
                    cur_corr.saturating_record(corr);
                    cur_unc.saturating_record(unc);
                }
            }
            Ok(_) => {
                // A valid answer, but too late: a timeout. The connection is still in sync.
                if measured {
                    res.timeouts += 1;
                }
            }
            Err(Failure::Timeout) => {
                if measured {
                    res.timeouts += 1;
                }
                conn = None; // the late answer would desynchronise the stream
            }
            Err(Failure::Error(m)) => {
                if measured {
                    res.errors += 1;
                    res.first_error.get_or_insert(m);
                }
                conn = None;
            }
        }
    }
    if !cur_corr.is_empty() {
        let _ = tx.send(IntervalMsg {
            idx: cur_idx,
            corrected: cur_corr,
            uncorrected: cur_unc,
        });
    }
    res
}
