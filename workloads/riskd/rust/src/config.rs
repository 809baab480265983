//! Command line of PROTOCOL.md ("Command line"), parsed with the standard library.
//!
//!     riskd-rust --listen HOST:PORT [--workers N] [--accounts A] [--window W]
//!                [--merchants M] [--rules R] [--seed S]
//!
//! Each flag takes its value as the next argument or after `=`. A flag given twice
//! keeps the last value. Errors are returned as messages; `main` prints them on
//! stderr and exits 2.

use std::ffi::OsString;
use std::net::{SocketAddr, ToSocketAddrs};
use std::str::FromStr;

use crate::engine::{MAX_MERCHANTS, MAX_RULES, MAX_WINDOW, Params};

pub const USAGE: &str = "usage: riskd-rust --listen HOST:PORT [--workers N] [--accounts A] \
[--window W] [--merchants M] [--rules R] [--seed S]";

const FLAGS: [&str; 7] = [
    "--listen",
    "--workers",
    "--accounts",
    "--window",
    "--merchants",
    "--rules",
    "--seed",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Resolved listen address.
    pub listen: SocketAddr,
    /// Threads that serve connections (tokio worker threads).
    pub workers: usize,
    pub params: Params,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Run(Config),
    Help,
}

/// Parses the arguments after the program name.
pub fn parse<I>(args: I) -> Result<Command, String>
where
    I: IntoIterator<Item = OsString>,
{
    let mut listen = None;
    let mut workers = None;
    let mut params = Params {
        accounts: 100_000,
        window: 32,
        merchants: 10_000,
        rules: 200,
        seed: 42,
    };

    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let arg = arg
            .into_string()
            .map_err(|a| format!("argument is not UTF-8: {a:?}"))?;
        if arg == "-h" || arg == "--help" {
            return Ok(Command::Help);
        }
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_owned(), Some(v.to_owned())),
            _ => (arg, None),
        };
        if !FLAGS.contains(&name.as_str()) {
            return Err(format!("unknown argument {name:?}"));
        }
        let value = match inline {
            Some(v) => v,
            None => args
                .next()
                .ok_or_else(|| format!("{name} needs a value"))?
                .into_string()
                .map_err(|v| format!("{name}: value is not UTF-8: {v:?}"))?,
        };
        match name.as_str() {
            "--listen" => listen = Some(resolve(&value)?),
            "--workers" => workers = Some(ranged(&name, &value, 1, usize::MAX)?),
            "--accounts" => params.accounts = number(&name, &value)?,
            "--window" => params.window = ranged(&name, &value, 1, MAX_WINDOW)?,
            "--merchants" => params.merchants = ranged(&name, &value, 1, MAX_MERCHANTS)?,
            "--rules" => params.rules = ranged(&name, &value, 1, MAX_RULES)?,
            "--seed" => params.seed = number(&name, &value)?,
            _ => unreachable!("flag names are checked above"),
        }
    }

    let listen = listen.ok_or("--listen HOST:PORT is required")?;
    let workers = match workers {
        Some(n) => n,
        None => std::thread::available_parallelism()
            .map_err(|e| format!("cannot count CPUs ({e}); pass --workers"))?
            .get(),
    };
    Ok(Command::Run(Config {
        listen,
        workers,
        params,
    }))
}

/// A decimal number (no sign, no spaces) of type T.
fn number<T: FromStr>(name: &str, value: &str) -> Result<T, String> {
    // FromStr for integers accepts a leading '+'; the protocol's values do not.
    if value.starts_with('+') {
        return Err(format!("{name}: invalid number {value:?}"));
    }
    value
        .parse()
        .map_err(|_| format!("{name}: invalid number {value:?}"))
}

/// A decimal number in `lo ..= hi`.
fn ranged<T: FromStr + PartialOrd + std::fmt::Display>(
    name: &str,
    value: &str,
    lo: T,
    hi: T,
) -> Result<T, String> {
    let v: T = number(name, value)?;
    if v < lo || v > hi {
        return Err(format!("{name}: {value} is out of range {lo} ..= {hi}"));
    }
    Ok(v)
}

/// HOST:PORT, where HOST is an IPv4 address, a bracketed IPv6 address or a name
/// (the first address it resolves to is used). An empty HOST (":PORT", as Go
/// spells it) means every IPv4 interface.
fn resolve(value: &str) -> Result<SocketAddr, String> {
    let bad = |why: String| format!("--listen: bad address {value:?}: {why}");
    let (host, port) = value
        .rsplit_once(':')
        .ok_or_else(|| bad("expected HOST:PORT".into()))?;
    let port: u16 = number("--listen", port).map_err(|_| bad("invalid port".into()))?;
    let host = match host {
        "" => "0.0.0.0",
        h => h
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(h),
    };
    (host, port)
        .to_socket_addrs()
        .map_err(|e| bad(e.to_string()))?
        .next()
        .ok_or_else(|| bad("resolves to no address".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Config, String> {
        match parse(args.iter().map(OsString::from))? {
            Command::Run(c) => Ok(c),
            Command::Help => Err("help".into()),
        }
    }

    #[test]
    fn defaults() {
        let c = run(&["--listen", "127.0.0.1:7000"]).unwrap();
        assert_eq!(c.listen, "127.0.0.1:7000".parse().unwrap());
        assert!(c.workers >= 1);
        assert_eq!(
            c.params,
            Params {
                accounts: 100_000,
                window: 32,
                merchants: 10_000,
                rules: 200,
                seed: 42
            }
        );
    }

    #[test]
    fn all_flags_both_spellings() {
        let c = run(&[
            "--listen=[::1]:0",
            "--workers",
            "3",
            "--accounts=0",
            "--window",
            "8",
            "--merchants=50",
            "--rules",
            "120",
            "--seed=18446744073709551615",
        ])
        .unwrap();
        assert_eq!(c.listen, "[::1]:0".parse().unwrap());
        assert_eq!(c.workers, 3);
        assert_eq!(
            c.params,
            Params {
                accounts: 0,
                window: 8,
                merchants: 50,
                rules: 120,
                seed: u64::MAX
            }
        );
        assert_eq!(
            run(&["--listen", ":9"]).unwrap().listen,
            "0.0.0.0:9".parse().unwrap()
        );
        assert_eq!(run(&["--listen", "localhost:9"]).unwrap().listen.port(), 9);
    }

    #[test]
    fn rejects() {
        let l = "--listen=127.0.0.1:1";
        for bad in [
            &[][..],
            &["--bogus", "1", l],
            &["-listen", "127.0.0.1:1"],
            &["127.0.0.1:1"],
            &[l, "--workers", "0"],
            &[l, "--window", "0"],
            &[l, "--merchants", "0"],
            &[l, "--rules", "0"],
            &[l, "--rules", "65536"],
            &[l, "--merchants", "4294967297"],
            &[l, "--accounts", "-1"],
            &[l, "--accounts", "+1"],
            &[l, "--seed", "18446744073709551616"],
            &[l, "--seed", "x"],
            &[l, "--seed"],
            &["--listen", "127.0.0.1"],
            &["--listen", "127.0.0.1:65536"],
            &["--listen", "127.0.0.1:x"],
            &["--listen", ""],
        ] {
            assert!(run(bad).is_err(), "accepted {bad:?}");
        }
        assert_eq!(run(&["--help"]), Err("help".into()));
    }
}
