//! loadgen — open-loop load generator for the riskd protocol.
//!
//! Open loop (default): a fixed total rate R over N connections; connection c owns
//! the intended send times t0 + (k·N + c)/R. With one request in flight per
//! connection, a connection that falls behind (server stall) sends its backlog as
//! fast as it can, and every latency is measured from the *intended* send time
//! (corrected for coordinated omission) and, as a diagnostic, from the actual send
//! time (uncorrected). `--max` is the closed-loop capacity mode.
//! Latencies go into HdrHistograms (us, 3 significant digits), one set per
//! connection thread, merged at the end; one merged histogram per second of the
//! measured period goes to the interval log. See workloads/riskd/PROTOCOL.md and the
//! methodology notes for the reasons.
//!
//! Exit codes: 0 the run happened (errors, if any, are in the summary); 1 the run
//! could not happen (cannot resolve/connect, cannot write outputs); 2 bad flags.

mod args;
mod conn;
mod proto;
mod report;

use std::net::ToSocketAddrs;
use std::process::ExitCode;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant, SystemTime};

use conn::{Mode, Plan};

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let a = match args::parse(&argv) {
        Ok(a) => a,
        Err(args::ArgError::Help) => {
            print!("{}", args::USAGE);
            return ExitCode::SUCCESS;
        }
        Err(args::ArgError::Bad(m)) => {
            eprintln!("loadgen: {m}");
            eprintln!("loadgen: try --help");
            return ExitCode::from(2);
        }
    };
    match run(a) {
        Ok(()) => ExitCode::SUCCESS,
        Err(m) => {
            eprintln!("loadgen: {m}");
            ExitCode::from(1)
        }
    }
}

fn run(a: args::Args) -> Result<(), String> {
    let timeout = Duration::from_millis(a.timeout_ms);
    let addr = a
        .target
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {}: {e}", a.target))?
        .next()
        .ok_or_else(|| format!("cannot resolve {}: no address", a.target))?;

    // Fail early on output files we could not write at the end.
    for path in [&a.summary_json, &a.hist_log, &a.hist_log_uncorrected]
        .into_iter()
        .flatten()
    {
        std::fs::File::create(path).map_err(|e| format!("cannot write {path}: {e}"))?;
    }

    // All connections up front: if the server is not there, the run cannot happen.
    let mut streams = Vec::with_capacity(a.connections);
    for _ in 0..a.connections {
        let s = conn::connect(&addr, timeout)
            .map_err(|e| format!("cannot connect to {} ({addr}): {e}", a.target))?;
        streams.push(s);
    }

    let mode = match a.rate {
        Some(r) if !a.max => Mode::Open(r),
        _ => Mode::Max,
    };
    let n_intervals = (a.duration_s.ceil() as usize).max(1);
    // Start a few ms from now so that every thread is parked at its first slot.
    let now = Instant::now();
    let wall_now = SystemTime::now();
    let t0 = now + Duration::from_millis(20);
    let wall_t0 = wall_now + Duration::from_millis(20);
    let warmup = Duration::from_secs_f64(a.warmup_s);
    let duration = Duration::from_secs_f64(a.duration_s);
    let plan = Arc::new(Plan {
        addr,
        mode,
        connections: a.connections,
        t0,
        warm_end: t0 + warmup,
        t_end: t0 + warmup + duration,
        timeout,
        n_intervals,
        accounts: a.accounts,
        merchants: a.merchants,
        seed: a.seed,
    });

    let (tx, rx) = mpsc::channel::<conn::IntervalMsg>();
    let mut handles = Vec::with_capacity(a.connections);
    for (c, s) in streams.into_iter().enumerate() {
        let plan = Arc::clone(&plan);
        let tx = tx.clone();
        let h = std::thread::Builder::new()
            .name(format!("conn-{c}"))
            .stack_size(512 * 1024)
            .spawn(move || conn::run(c, plan, s, tx))
            .map_err(|e| format!("cannot start a thread: {e}"))?;
        handles.push(h);
    }
    drop(tx);

    // Merge per-second histograms as the threads hand them over.
    let mut intervals: Vec<(hdrhistogram::Histogram<u64>, hdrhistogram::Histogram<u64>)> =
        Vec::with_capacity(n_intervals);
    for _ in 0..n_intervals {
        intervals.push((conn::new_hist(), conn::new_hist()));
    }
    for m in rx {
        let slot = &mut intervals[m.idx];
        slot.0.add(&m.corrected).expect("same bounds");
        slot.1.add(&m.uncorrected).expect("same bounds");
    }
    let mut results = Vec::with_capacity(handles.len());
    for h in handles {
        results.push(
            h.join()
                .map_err(|_| "a connection thread panicked".to_string())?,
        );
    }

    let summary = report::Summary::merge(&a, &results);
    if let Some(p) = &a.summary_json {
        std::fs::write(p, summary.to_json()).map_err(|e| format!("cannot write {p}: {e}"))?;
    }
    let wall_measure = wall_t0 + warmup;
    if let Some(p) = &a.hist_log {
        report::write_interval_log(p, &intervals, true, wall_measure, a.duration_s)?;
    }
    if let Some(p) = &a.hist_log_uncorrected {
        report::write_interval_log(p, &intervals, false, wall_measure, a.duration_s)?;
    }
    eprintln!("{}", summary.human_line());
    Ok(())
}
