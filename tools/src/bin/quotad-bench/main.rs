//! `quotad-bench`: a load generator for quotad, in the spirit of redis-benchmark. Closed loop (N calls in
//! flight over M connections) or open loop (a fixed rate, latency measured from each call's intended send
//! time, so a stalled server cannot hide its queueing: no coordinated omission). Calls: Acquire,
//! Acquire+Release, or grpc.health.v1 Check on the same server as the baseline. Prints calls/s, decisions,
//! errors by status and latency percentiles from an HdrHistogram; `--json` for machines.
//!
//! ```sh
//! quotad-bench --call acquire --concurrency 64 --connections 4 --duration 10s
//! quotad-bench --call health  --concurrency 64 --connections 4 --duration 10s   # the baseline
//! quotad-bench --call acquire --rate 20000 --duration 10s                        # open loop
//! ```
//!
//! - `args.rs`: the command line.
//! - `caller.rs`: one call of each kind over a pool of connections.
//! - `drive.rs`: the closed and open loops, warm-up, bounds and the progress bar.
//! - `report.rs`: the summary (text or JSON).

// A function fits on a screen (clippy.toml: 80 lines); tests may run longer.
#![warn(clippy::too_many_lines)]
#![cfg_attr(test, allow(clippy::too_many_lines))]

mod args;
mod caller;
mod drive;
mod report;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args = match args::parse(std::env::args().skip(1)) {
        Ok(args::Parsed::Run(a)) => *a,
        Ok(args::Parsed::Help) => {
            println!("{}", args::USAGE);
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("quotad-bench: {e}\n\n{}", args::USAGE);
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("quotad-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let caller = match caller::Caller::connect(&args).await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("quotad-bench: cannot connect to {}: {e}", args.target);
                return ExitCode::FAILURE;
            }
        };
        let summary = drive::run(&args, caller).await;
        if args.json {
            println!("{}", summary.to_json());
        } else {
            print!("{summary}");
        }
        if summary.calls == 0 {
            eprintln!("quotad-bench: no call completed");
            return ExitCode::FAILURE;
        }
        ExitCode::SUCCESS
    })
}
