//! riskd-rust: the Rust implementation of the riskd fraud/risk decision server
//! (workloads/riskd/PROTOCOL.md; algorithm as in workloads/riskd/reference.py).
//!
//! A tokio multi-threaded runtime with `--workers` worker threads runs one task
//! per connection; the decision state is shared through sharded, mutex-protected
//! maps (see `engine`).

mod config;
mod engine;
mod proto;
mod report;
mod server;
#[cfg(test)]
mod testutil;

use std::io::{self, Write as _};
use std::process::ExitCode;
use std::sync::Arc;

use config::{Command, Config, USAGE};
use engine::Engine;
use server::Server;

/// Exit status for a bad command line (unknown flag, impossible value, an address
/// that cannot be listened on).
const EXIT_USAGE: u8 = 2;

fn main() -> ExitCode {
    let cfg = match config::parse(std::env::args_os().skip(1)) {
        Ok(Command::Run(cfg)) => cfg,
        Ok(Command::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(msg) => {
            eprintln!("riskd-rust: {msg}\n{USAGE}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match run(&cfg) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Listen(e)) => {
            eprintln!("riskd-rust: cannot listen on {}: {e}", cfg.listen);
            ExitCode::from(EXIT_USAGE)
        }
        Err(Failure::Io(e)) => {
            eprintln!("riskd-rust: {e}");
            ExitCode::FAILURE
        }
    }
}

enum Failure {
    /// The listen address could not be bound (not local, in use, ...).
    Listen(io::Error),
    Io(io::Error),
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        Failure::Io(e)
    }
}

fn run(cfg: &Config) -> Result<(), Failure> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cfg.workers)
        .thread_name("riskd-worker")
        .enable_io()
        .enable_time()
        .build()?;
    // The main thread drives the accept loop; connections run on the workers.
    runtime.block_on(async {
        // Bind first, so that an unusable address fails before the pre-load.
        let listener = server::bind(cfg.listen).map_err(Failure::Listen)?;
        // Pre-load on this thread, before anything else runs (synchronous, by
        // design: the server is not ready until it is done).
        let engine = Arc::new(Engine::new(cfg.params));
        let server = Server::new(listener, Arc::clone(&engine))?;
        let p = &cfg.params;
        let mut stdout = io::stdout().lock();
        writeln!(
            stdout,
            "READY riskd-rust listen={} accounts={} window={} rules={}",
            server.local_addr()?,
            p.accounts,
            p.window,
            p.rules
        )?;
        stdout.flush()?;
        drop(stdout);

        let counts = server.run().await;

        // `engine` is still alive here, so the allocator figures include the
        // state, as they would for a server still in service.
        let mut stdout = io::stdout().lock();
        writeln!(stdout, "{}", report::shutdown_line(counts))?;
        stdout.flush()?;
        drop(engine);
        Ok(())
    })
}
