//! The command line.

use std::time::Duration;

pub const USAGE: &str = "\
quotad-bench: load generator for quotad

USAGE:
    quotad-bench [OPTIONS]

OPTIONS:
    --target URL          server (default http://127.0.0.1:50051)
    --call KIND           acquire | acquire-release | health (default acquire)
    --concurrency N       calls in flight, closed loop (default 64)
    --connections M       HTTP/2 connections (default 4)
    --rate R              open loop: R calls/s, latency from each call's intended send time
    --duration D          measure for D (default 10s unless --requests is given), e.g. 500ms, 30s
    --requests N          stop after N measured calls
    --warmup D            calls before measuring starts (default 1s)
    --resource NAME       resource to acquire (default example.api)
    --keys K              spread calls over K distinct descriptor values (default 0: none)
    --descriptor NAME     descriptor key for --keys (default tenant)
    --with KEY=VALUE      a fixed descriptor on every acquire (repeatable), e.g. --with endpoint=/v1/chat
    --permits N           permits per acquire (default 1)
    --priority C[,C...]   priority class of each acquire; several are taken in turn, e.g. critical,batch,batch
    --request-ids         each acquire carries a request_id of its own (as the Rust and Python clients send)
    --threads T           load generator worker threads (default: all cores)
    --json                print the summary as JSON
    --no-progress         no progress bar
    -h, --help";

/// Which call to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallKind {
    Acquire,
    AcquireRelease,
    Health,
}

impl CallKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CallKind::Acquire => "acquire",
            CallKind::AcquireRelease => "acquire-release",
            CallKind::Health => "health",
        }
    }
}

/// A validated command line.
#[derive(Debug, Clone)]
pub struct Args {
    pub target: String,
    pub call: CallKind,
    pub concurrency: usize,
    pub connections: usize,
    pub rate: Option<f64>,
    pub duration: Option<Duration>,
    pub requests: Option<u64>,
    pub warmup: Duration,
    pub resource: String,
    pub keys: u64,
    pub descriptor: String,
    pub fixed: Vec<(String, String)>,
    pub permits: u64,
    pub priorities: Vec<String>,
    /// Each acquire carries a request_id of its own.
    pub request_ids: bool,
    pub threads: usize,
    pub json: bool,
    pub progress: bool,
}

pub enum Parsed {
    Run(Box<Args>),
    Help,
}

fn duration(flag: &str, v: &str) -> Result<Duration, String> {
    humantime::parse_duration(v).map_err(|e| format!("{flag}: '{v}' is not a duration ({e})"))
}

fn number<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T, String> {
    v.parse()
        .map_err(|_| format!("{flag}: '{v}' is not a valid number"))
}

fn call_kind(v: &str) -> Result<CallKind, String> {
    match v {
        "acquire" => Ok(CallKind::Acquire),
        "acquire-release" => Ok(CallKind::AcquireRelease),
        "health" => Ok(CallKind::Health),
        other => Err(format!(
            "--call: '{other}' is not one of acquire, acquire-release, health"
        )),
    }
}

pub fn parse(mut it: impl Iterator<Item = String>) -> Result<Parsed, String> {
    let mut a = Args {
        target: "http://127.0.0.1:50051".into(),
        call: CallKind::Acquire,
        concurrency: 64,
        connections: 4,
        rate: None,
        duration: None,
        requests: None,
        warmup: Duration::from_secs(1),
        resource: "example.api".into(),
        keys: 0,
        descriptor: "tenant".into(),
        fixed: Vec::new(),
        permits: 1,
        priorities: Vec::new(),
        request_ids: false,
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        json: false,
        progress: true,
    };
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "-h" | "--help" => return Ok(Parsed::Help),
            "--target" => a.target = value()?,
            "--call" => a.call = call_kind(&value()?)?,
            "--concurrency" => a.concurrency = number(&flag, &value()?)?,
            "--connections" => a.connections = number(&flag, &value()?)?,
            "--rate" => a.rate = Some(number(&flag, &value()?)?),
            "--duration" => a.duration = Some(duration(&flag, &value()?)?),
            "--requests" => a.requests = Some(number(&flag, &value()?)?),
            "--warmup" => a.warmup = duration(&flag, &value()?)?,
            "--resource" => a.resource = value()?,
            "--keys" => a.keys = number(&flag, &value()?)?,
            "--descriptor" => a.descriptor = value()?,
            "--with" => {
                let v = value()?;
                let (k, val) = v
                    .split_once('=')
                    .ok_or_else(|| format!("--with: '{v}' is not KEY=VALUE"))?;
                a.fixed.push((k.to_owned(), val.to_owned()));
            }
            "--permits" => a.permits = number(&flag, &value()?)?,
            "--priority" => {
                let v = value()?;
                a.priorities = v.split(',').map(str::to_owned).collect();
                if a.priorities.iter().any(String::is_empty) {
                    return Err(format!("--priority: '{v}' has an empty class"));
                }
            }
            "--request-ids" => a.request_ids = true,
            "--threads" => a.threads = number(&flag, &value()?)?,
            "--json" => a.json = true,
            "--no-progress" => a.progress = false,
            other => return Err(format!("unknown option '{other}'")),
        }
    }
    if !a.target.starts_with("http://") && !a.target.starts_with("https://") {
        a.target = format!("http://{}", a.target);
    }
    if a.concurrency == 0 || a.connections == 0 || a.threads == 0 {
        return Err("--concurrency, --connections and --threads must be at least 1".into());
    }
    if a.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
        return Err("--rate must be a positive number of calls per second".into());
    }
    if a.duration.is_none() && a.requests.is_none() {
        a.duration = Some(Duration::from_secs(10));
    }
    if a.json {
        a.progress = false;
    }
    Ok(Parsed::Run(Box::new(a)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(s: &str) -> Result<Args, String> {
        match parse(s.split_whitespace().map(str::to_owned))? {
            Parsed::Run(a) => Ok(*a),
            Parsed::Help => Err("help".into()),
        }
    }

    #[test]
    fn defaults_and_flags() {
        let a = run("").unwrap();
        assert_eq!((a.concurrency, a.connections), (64, 4));
        assert_eq!(a.duration, Some(Duration::from_secs(10)));
        let a = run("--call health --rate 500 --requests 10 --target 127.0.0.1:1 --json").unwrap();
        assert_eq!(a.call, CallKind::Health);
        assert_eq!(
            (a.rate, a.requests, a.duration),
            (Some(500.0), Some(10), None)
        );
        assert_eq!(a.target, "http://127.0.0.1:1");
        assert!(!a.progress);
        assert!(run("--call nope").unwrap_err().contains("--call"));
        assert!(run("--rate -1").is_err());
        let a = run("--with endpoint=/v1 --with region=eu").unwrap();
        assert_eq!(a.fixed.len(), 2);
        assert!(run("--with nope").is_err());
        assert!(run("--duration").unwrap_err().contains("needs a value"));
        assert!(run("--request-ids").unwrap().request_ids);
        assert!(!run("").unwrap().request_ids);
        let a = run("--priority critical,batch,batch").unwrap();
        assert_eq!(a.priorities, ["critical", "batch", "batch"]);
        assert!(
            run("--priority critical,")
                .unwrap_err()
                .contains("--priority")
        );
    }
}
