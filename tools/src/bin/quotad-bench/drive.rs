//! The loops. Closed loop: `--concurrency` tasks, each calling again as soon as its call returns. Open loop:
//! one scheduler issuing a call every 1/`--rate` s, each timed from its intended send time, so queueing
//! anywhere (the server, the network, this generator) shows up in the latency. Both run `--warmup` before
//! measuring and stop at `--duration` or after `--requests` measured calls, whichever comes first.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use futures_util::{StreamExt, stream::FuturesUnordered};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::time::Instant;

use crate::{
    args::Args,
    caller::{Answer, Caller},
    report::Summary,
};

/// What the calls saw, merged at the end.
struct Tally {
    latency: Histogram<u64>,
    answers: BTreeMap<Answer, u64>,
}

impl Tally {
    fn new() -> Self {
        Self {
            // Nanoseconds, 1 µs to 100 s, 3 significant digits.
            latency: Histogram::new_with_bounds(1_000, 100_000_000_000, 3)
                .expect("valid histogram bounds"),
            answers: BTreeMap::new(),
        }
    }

    fn record(&mut self, answer: Answer, latency: Duration) {
        let ns = (latency.as_nanos() as u64).clamp(1_000, 100_000_000_000);
        self.latency.saturating_record(ns);
        *self.answers.entry(answer).or_default() += 1;
    }

    fn merge(&mut self, other: &Tally) {
        let _ = self.latency.add(&other.latency);
        for (a, n) in &other.answers {
            *self.answers.entry(*a).or_default() += n;
        }
    }
}

/// Shared between the loops and the progress bar.
struct Shared {
    caller: Caller,
    measure_from: Instant,
    stop: AtomicBool,
    /// Measured calls completed.
    done: AtomicU64,
    /// Calls issued (numbers calls, so they spread over connections and keys).
    issued: AtomicU64,
    requests: Option<u64>,
}

impl Shared {
    fn measuring(&self) -> bool {
        Instant::now() >= self.measure_from
    }

    /// Counts a measured call; true when `--requests` is reached.
    fn count(&self) -> bool {
        let n = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        if self.requests.is_some_and(|r| n >= r) {
            self.stop.store(true, Ordering::Relaxed);
            return true;
        }
        false
    }
}

fn progress_bar(args: &Args) -> ProgressBar {
    if !args.progress {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    if let Ok(style) = ProgressStyle::with_template("{spinner} {elapsed} {msg}") {
        bar.set_style(style);
    }
    bar
}

/// Runs the load described by `args` and summarises it.
pub async fn run(args: &Args, caller: Caller) -> Summary {
    let start = Instant::now();
    let shared = Arc::new(Shared {
        caller,
        measure_from: start + args.warmup,
        stop: AtomicBool::new(false),
        done: AtomicU64::new(0),
        issued: AtomicU64::new(0),
        requests: args.requests,
    });
    let bar = progress_bar(args);
    let ticker = {
        let (shared, bar) = (shared.clone(), bar.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            loop {
                tick.tick().await;
                let done = shared.done.load(Ordering::Relaxed);
                let phase = if shared.measuring() {
                    "measuring"
                } else {
                    "warming up"
                };
                let secs = shared.measure_from.elapsed().as_secs_f64();
                let rate = if secs > 0.0 { done as f64 / secs } else { 0.0 };
                bar.set_message(format!("{phase}: {done} calls, {rate:.0}/s"));
            }
        })
    };
    let deadline = args.duration.map(|d| shared.measure_from + d);
    let timer = {
        let shared = shared.clone();
        tokio::spawn(async move {
            if let Some(d) = deadline {
                tokio::time::sleep_until(d).await;
                shared.stop.store(true, Ordering::Relaxed);
            }
        })
    };

    let tally = match args.rate {
        None => closed_loop(args, &shared).await,
        Some(rate) => open_loop(rate, &shared).await,
    };
    let elapsed = shared.measure_from.elapsed();
    ticker.abort();
    timer.abort();
    bar.finish_and_clear();
    Summary::new(args, &tally.latency, &tally.answers, elapsed)
}

async fn closed_loop(args: &Args, shared: &Arc<Shared>) -> Tally {
    let mut tasks = Vec::with_capacity(args.concurrency);
    for _ in 0..args.concurrency {
        let shared = shared.clone();
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::new();
            while !shared.stop.load(Ordering::Relaxed) {
                let n = shared.issued.fetch_add(1, Ordering::Relaxed);
                let sent = Instant::now();
                let answer = shared.caller.call(n).await;
                if sent >= shared.measure_from {
                    tally.record(answer, sent.elapsed());
                    if shared.count() {
                        break;
                    }
                }
            }
            tally
        }));
    }
    let mut total = Tally::new();
    for t in tasks {
        if let Ok(t) = t.await {
            total.merge(&t);
        }
    }
    total
}

/// Open loop: most calls in flight at once.
const MAX_IN_FLIGHT: usize = 4096;

/// Calls sent inside the window count however long they take (dropping the slow ones would hide exactly
/// what an open loop is for); a server that never answers gets this much more.
const GIVE_UP: Duration = Duration::from_secs(10);

async fn open_loop(rate: f64, shared: &Arc<Shared>) -> Tally {
    // A pacer thread sleeps (the kernel's timer, tens of microseconds late at most, where tokio's is a
    // millisecond) until each call's intended send time and hands the time over a channel; one task on the
    // runtime's worker owns every call in flight (a FuturesUnordered), starting each as its time arrives and
    // recording those that answer. Nothing is spawned per call, and nothing spins: an earlier version spun
    // through the last 2 ms before each send, which at a few thousand calls/s kept a whole core busy and, on
    // a 2-core machine, starved the server it was measuring (p99 at 6,000/s against Redis: 405 ms spinning,
    // see BENCHMARKS.md). Each call is timed from its intended send time; past MAX_IN_FLIGHT, later calls
    // wait in the channel (still timed from their intended time) rather than piling onto the connections.
    let (due_tx, mut due) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let pacer = {
        let shared = shared.clone();
        std::thread::spawn(move || pace(rate, &shared, &due_tx))
    };
    let shared = shared.clone();
    let task = tokio::spawn(async move {
        let shared = &shared;
        let mut tally = Tally::new();
        let mut calls = FuturesUnordered::new();
        let mut paced = true;
        let mut give_up = None;
        let start = |intended: Instant| {
            let n = shared.issued.fetch_add(1, Ordering::Relaxed);
            async move { (shared.caller.call(n).await, intended) }
        };
        let record = |tally: &mut Tally, (answer, intended): (Answer, Instant)| {
            if intended >= shared.measure_from {
                tally.record(answer, intended.elapsed());
                shared.count();
            }
        };
        loop {
            while paced && calls.len() < MAX_IN_FLIGHT {
                match due.try_recv() {
                    Ok(intended) => calls.push(start(intended)),
                    Err(tokio::sync::mpsc::error::TryRecvError::Empty) => break,
                    Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => paced = false,
                }
            }
            if !paced {
                let now = Instant::now();
                if calls.is_empty() {
                    break;
                } else if now >= *give_up.get_or_insert(now + GIVE_UP) {
                    eprintln!(
                        "quotad-bench: {} calls still unanswered {GIVE_UP:?} after the end; not counted",
                        calls.len()
                    );
                    break;
                }
            }
            let room = paced && calls.len() < MAX_IN_FLIGHT;
            tokio::select! {
                Some(done) = calls.next() => record(&mut tally, done),
                more = due.recv(), if room => match more {
                    Some(intended) => calls.push(start(intended)),
                    None => paced = false,
                },
                () = tokio::time::sleep(Duration::from_millis(100)), if !paced => {}
            }
        }
        tally
    });
    let tally = task.await.unwrap_or_else(|_| Tally::new());
    let _ = pacer.join();
    tally
}

/// The open loop's clock: sends each call's intended time when it comes, until told to stop (or the
/// receiver is gone). Sleeps between sends; calls whose time has passed (the thread woke late) go at once.
fn pace(rate: f64, shared: &Shared, due: &tokio::sync::mpsc::UnboundedSender<Instant>) {
    let interval = Duration::from_secs_f64(1.0 / rate);
    let first = Instant::now();
    let mut i: u64 = 0;
    while !shared.stop.load(Ordering::Relaxed) {
        let intended = first + interval.mul_f64(i as f64);
        let now = Instant::now();
        if intended > now {
            // In slices, so a stop is seen promptly however low the rate.
            std::thread::sleep((intended - now).min(Duration::from_millis(50)));
            continue;
        }
        i += 1;
        if due.send(intended).is_err() {
            return;
        }
    }
}
