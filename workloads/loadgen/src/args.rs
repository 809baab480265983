//! Command-line flags. Hand-written (no clap) so that the exit codes are exactly the
//! design contract: unknown flags or impossible values -> message on stderr, exit 2.

use std::fmt;

pub const USAGE: &str = "\
usage: loadgen --target HOST:PORT (--rate R | --max) [options]

Open-loop load generator for the riskd protocol (workloads/riskd/PROTOCOL.md).

  --target HOST:PORT          riskd server to load (required)
  --rate R                    total requests/s over all connections (open loop; required unless --max)
  --max                       closed-loop capacity mode: each connection sends its next request as
                              soon as the previous answer arrives (--rate is ignored)
  --duration SECONDS          measured period (default 10)
  --warmup SECONDS            warm-up before the measured period, same schedule, not recorded (default 2)
  --connections N             TCP connections, one outstanding request each (default 8)
  --timeout-ms MS             a response slower than this is a timeout, not a latency (default 2000)
  --summary-json FILE         write the run summary as JSON
  --hist-log FILE             HdrHistogram interval log (1 s intervals) of corrected latencies (us)
  --hist-log-uncorrected FILE the same for latencies measured from the actual send time
  --accounts A                account ids are drawn from [0, A) (default 100000)
  --merchants M               merchant ids are drawn from [0, M) (default 10000)
  --seed S                    request generator seed (default 1)
  -h, --help                  this text
";

#[derive(Debug, Clone)]
pub struct Args {
    pub target: String,
    pub rate: Option<f64>,
    pub max: bool,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub connections: usize,
    pub timeout_ms: u64,
    pub summary_json: Option<String>,
    pub hist_log: Option<String>,
    pub hist_log_uncorrected: Option<String>,
    pub accounts: u64,
    pub merchants: u64,
    pub seed: u64,
}

#[derive(Debug)]
pub enum ArgError {
    Help,
    Bad(String),
}

impl fmt::Display for ArgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArgError::Help => write!(f, "help requested"),
            ArgError::Bad(m) => write!(f, "{m}"),
        }
    }
}

fn bad<T>(msg: String) -> Result<T, ArgError> {
    Err(ArgError::Bad(msg))
}

fn parse_f64(flag: &str, v: &str) -> Result<f64, ArgError> {
    match v.parse::<f64>() {
        Ok(x) if x.is_finite() => Ok(x),
        _ => bad(format!("{flag}: not a number: {v:?}")),
    }
}

fn parse_u64(flag: &str, v: &str) -> Result<u64, ArgError> {
    v.parse::<u64>()
        .or_else(|_| bad(format!("{flag}: not a non-negative integer: {v:?}")))
}

/// Parse `argv[1..]`. Accepts `--flag value` and `--flag=value`.
pub fn parse(argv: &[String]) -> Result<Args, ArgError> {
    let mut target = None;
    let mut rate = None;
    let mut max = false;
    let mut duration_s = 10.0;
    let mut warmup_s = 2.0;
    let mut connections: u64 = 8;
    let mut timeout_ms: u64 = 2000;
    let mut summary_json = None;
    let mut hist_log = None;
    let mut hist_log_uncorrected = None;
    let mut accounts: u64 = 100_000;
    let mut merchants: u64 = 10_000;
    let mut seed: u64 = 1;

    let mut i = 0;
    while i < argv.len() {
        let arg = &argv[i];
        i += 1;
        if arg == "-h" || arg == "--help" {
            return Err(ArgError::Help);
        }
        if arg == "--max" {
            max = true;
            continue;
        }
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let known = [
            "--target",
            "--rate",
            "--duration",
            "--warmup",
            "--connections",
            "--timeout-ms",
            "--summary-json",
            "--hist-log",
            "--hist-log-uncorrected",
            "--accounts",
            "--merchants",
            "--seed",
        ];
        if !known.contains(&name.as_str()) {
            return bad(format!("unknown argument: {arg}"));
        }
        let value = match inline {
            Some(v) => v,
            None => {
                if i >= argv.len() {
                    return bad(format!("{name}: missing value"));
                }
                i += 1;
                argv[i - 1].clone()
            }
        };
        match name.as_str() {
            "--target" => target = Some(value),
            "--rate" => rate = Some(parse_f64(&name, &value)?),
            "--duration" => duration_s = parse_f64(&name, &value)?,
            "--warmup" => warmup_s = parse_f64(&name, &value)?,
            "--connections" => connections = parse_u64(&name, &value)?,
            "--timeout-ms" => timeout_ms = parse_u64(&name, &value)?,
            "--summary-json" => summary_json = Some(value),
            "--hist-log" => hist_log = Some(value),
            "--hist-log-uncorrected" => hist_log_uncorrected = Some(value),
            "--accounts" => accounts = parse_u64(&name, &value)?,
            "--merchants" => merchants = parse_u64(&name, &value)?,
            "--seed" => seed = parse_u64(&name, &value)?,
            _ => unreachable!(),
        }
    }

    let target = match target {
        Some(t) => t,
        None => return bad("--target HOST:PORT is required".into()),
    };
    match target.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0) => {}
        _ => return bad(format!("--target: expected HOST:PORT, got {target:?}")),
    }
    if max {
        rate = None; // ignored in capacity mode
    } else {
        match rate {
            None => return bad("--rate R is required (or --max)".into()),
            Some(r) if r <= 0.0 => return bad(format!("--rate must be > 0, got {r}")),
            Some(r) if r > 100_000_000.0 => return bad(format!("--rate too large: {r}")),
            _ => {}
        }
    }
    if !(duration_s > 0.0 && duration_s <= 86_400.0) {
        return bad(format!(
            "--duration must be in (0, 86400] seconds, got {duration_s}"
        ));
    }
    if !(0.0..=86_400.0).contains(&warmup_s) {
        return bad(format!(
            "--warmup must be in [0, 86400] seconds, got {warmup_s}"
        ));
    }
    if connections == 0 || connections > 10_000 {
        return bad(format!(
            "--connections must be in [1, 10000], got {connections}"
        ));
    }
    if timeout_ms == 0 || timeout_ms > 3_600_000 {
        return bad(format!(
            "--timeout-ms must be in [1, 3600000], got {timeout_ms}"
        ));
    }
    if accounts == 0 {
        return bad("--accounts must be >= 1".into());
    }
    if merchants == 0 || merchants > u64::from(u32::MAX) + 1 {
        return bad(format!("--merchants must be in [1, 2^32], got {merchants}"));
    }
    Ok(Args {
        target,
        rate,
        max,
        duration_s,
        warmup_s,
        connections: connections as usize,
        timeout_ms,
        summary_json,
        hist_log,
        hist_log_uncorrected,
        accounts,
        merchants,
        seed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &[&str]) -> Result<Args, ArgError> {
        parse(&s.iter().map(|x| x.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn good_and_bad() {
        let a = p(&[
            "--target",
            "127.0.0.1:9",
            "--rate=100",
            "--connections",
            "4",
        ])
        .unwrap();
        assert_eq!(a.rate, Some(100.0));
        assert_eq!(a.connections, 4);
        assert!(p(&["--target", "127.0.0.1:9", "--max", "--rate", "-5"]).is_ok());
        for bad in [
            &["--target", "127.0.0.1:9", "--rate", "-5"][..],
            &["--target", "127.0.0.1:9", "--rate", "0"],
            &[
                "--target",
                "127.0.0.1:9",
                "--rate",
                "10",
                "--connections",
                "0",
            ],
            &["--target", "127.0.0.1:9", "--rate", "10", "--duration", "0"],
            &["--target", "127.0.0.1:9", "--rate", "10", "--warmup", "-1"],
            &["--target", "127.0.0.1:9", "--rate", "10", "--bogus"],
            &["--target", "127.0.0.1", "--rate", "10"],
            &["--rate", "10"],
            &["--target", "127.0.0.1:9"],
        ] {
            assert!(matches!(p(bad), Err(ArgError::Bad(_))), "{bad:?}");
        }
    }
}
