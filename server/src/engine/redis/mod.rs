//! The Redis store: several quotad nodes share exact limits through one Redis (or Redis Cluster).
//!
//! Every step is one call of a Redis Function (the library in `lua/`, loaded once and called
//! with `FCALL`; a Redis that does not have it, after a restart, a failover or `FUNCTION FLUSH`, is sent it
//! within the same call, so no client ever sees the miss). The function runs the same policy as the
//! in-memory store, against state kept in Redis under one hash tag per resource shard ([`keys`]), with
//! Redis's own clock, so a node whose clock is off cannot over-admit. [`args`] builds each call's
//! parameters and [`reply`] reads its answer; [`fallback`] is what a node does while Redis is down.
//!
//! Redis calls are bounded: each has a timeout, and at most `max_in_flight` are outstanding per node; past
//! that a call fails at once as UNAVAILABLE instead of queueing behind a stalled Redis.

pub mod args;
mod batch;
pub mod eviction;
pub mod fallback;
pub mod keys;
pub mod messages;
pub mod protocol;
pub mod reply;
pub mod share;
pub mod store;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use ::redis::{ToRedisArgs, Value, aio::ConnectionManager, cluster_async::ClusterConnection};
use dashmap::DashSet;
use tokio::sync::Semaphore;

use crate::engine::{EngineError, Rules};

pub use keys::Keys;
pub use protocol::Layout;

/// The library every step runs (a Redis Function; see [`library`]): `lua/prelude.lua` (arguments, time,
/// protocol), `lua/policy.lua` (the policy's primitives, each a declared twin of a Rust function),
/// `lua/state.lua` (how state is kept), `lua/steps.lua` (the steps), joined in that order.
const SCRIPT: &str = concat!(
    include_str!("lua/prelude.lua"),
    "\n",
    include_str!("lua/policy.lua"),
    "\n",
    include_str!("lua/state.lua"),
    "\n",
    include_str!("lua/steps.lua"),
);

/// The function's name and the library's code: the name carries a hash of the code (the script and its
/// protocol tables), so nodes of two quotad versions sharing one Redis (a rolling upgrade) each call their own.
fn library(layout: Layout) -> (String, String) {
    let protocol = protocol::lua(layout);
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in SCRIPT.bytes().chain(protocol.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let name = format!("quotad_{h:016x}");
    let code = format!("#!lua name={name}\n{}", script(&name, layout));
    (name, code)
}

/// The script as Redis runs it, its function named `function` (with its protocol tables; without the
/// `#!lua` header): what `scripts/bench-redis-instructions.sh` loads.
pub fn script(function: &str, layout: Layout) -> String {
    SCRIPT
        .replace("__QUOTAD_FUNCTION__", function)
        .replace("__QUOTAD_PROTOCOL__", &protocol::lua(layout))
}

/// The steps the library also registers as `<function>_end`, flagged `allow-oom` (steps.lua's `ENDING`):
/// they end or extend what is there, so a Redis at its `maxmemory` still releases, renews, revokes and
/// sweeps leases while it refuses everything that could grow it.
const ENDING: [&str; 4] = ["rel", "ren", "rvk", "swp"];

/// One call's keys and arguments (`FCALL <function> <numkeys> keys... args...`): the step's named fields
/// ([`protocol`]) set by name, then any list that follows them (a level's keys, a shard's prefix).
#[derive(Debug, Clone)]
pub struct Call {
    keys: Vec<Vec<u8>>,
    args: Vec<Vec<u8>>,
    /// Named keys and arguments not set yet, one bit each: a call with any left is refused, not sent.
    unset_keys: u64,
    unset_args: u64,
    /// The step's field names, to say which one was left unset.
    names: (protocol::Fields, Option<protocol::Fields>),
    /// One of [`ENDING`]: called through the `_end` function.
    ending: bool,
    /// The shard every key is in, when the call may share a batch with that shard's others.
    shard: Option<u64>,
}

impl Call {
    /// A call of the step whose arguments are `args` (and keys `keys`, if it names them); every field
    /// must be set before it is sent.
    pub fn new(args: protocol::Fields, keys: Option<protocol::Fields>) -> Self {
        let (nargs, nkeys) = (args.names.len(), keys.map_or(0, |k| k.names.len()));
        let mut call = Self {
            keys: vec![Vec::new(); nkeys],
            args: vec![Vec::new(); nargs],
            unset_keys: (1u64 << nkeys) - 1,
            unset_args: (1u64 << nargs) - 1,
            names: (args, keys),
            ending: ENDING.contains(&args.step),
            shard: None,
        };
        call.set(0, args.step);
        call
    }

    /// Sets the named argument at `field` (a constant of [`protocol::arg`]).
    pub fn set(&mut self, field: usize, arg: impl ToRedisArgs) -> &mut Self {
        if let Some(slot) = self.args.get_mut(field) {
            *slot = one(arg);
            self.unset_args &= !(1 << field);
        }
        self
    }

    /// Sets the named key at `field` (a constant of [`protocol::key`]).
    pub fn set_key(&mut self, field: usize, key: impl ToRedisArgs) -> &mut Self {
        if let Some(slot) = self.keys.get_mut(field) {
            *slot = one(key);
            self.unset_keys &= !(1 << field);
        }
        self
    }

    /// Adds a key after the named ones.
    pub fn key(&mut self, key: impl ToRedisArgs) -> &mut Self {
        key.write_redis_args(&mut self.keys);
        self
    }

    /// Lets the call share a batch with `shard`'s others (every key it names is in that shard).
    pub fn in_shard(&mut self, shard: u64) -> &mut Self {
        self.shard = Some(shard);
        self
    }

    /// One call that runs `calls` (all of one lane) in order, each on its own (steps.lua `run_batch`):
    /// `batch`, their count, each one's key and argument counts, then their arguments in order; their keys
    /// in order.
    fn batch<'c>(calls: impl Iterator<Item = &'c Call> + Clone) -> Self {
        let (mut keys, mut args) = (Vec::new(), vec![b"batch".to_vec()]);
        let mut first = None;
        let mut n = 0usize;
        for c in calls.clone() {
            first.get_or_insert((c.names, c.ending));
            n += 1;
        }
        args.push(one(n));
        for c in calls.clone() {
            args.push(one(c.keys.len()));
            args.push(one(c.args.len()));
        }
        for c in calls {
            keys.extend(c.keys.iter().cloned());
            args.extend(c.args.iter().cloned());
        }
        let (names, ending) = first.unwrap_or(((protocol::arg::rel::FIELDS, None), false));
        Self {
            keys,
            args,
            unset_keys: 0,
            unset_args: 0,
            names,
            ending,
            shard: None,
        }
    }

    /// Adds an argument after the named ones.
    pub fn arg(&mut self, arg: impl ToRedisArgs) -> &mut Self {
        arg.write_redis_args(&mut self.args);
        self
    }

    /// The first named field left unset, if any (a bug on this side: the call is not sent).
    fn unset(&self) -> Option<String> {
        let (args, keys) = self.names;
        let first = |bits: u64, f: protocol::Fields, what: &str| {
            let i = bits.trailing_zeros() as usize;
            f.names
                .get(i)
                .map(|n| format!("{what} {n} of step {}", f.step))
        };
        if self.unset_args != 0 {
            return first(self.unset_args, args, "argument");
        }
        keys.filter(|_| self.unset_keys != 0)
            .and_then(|k| first(self.unset_keys, k, "key"))
    }
}

/// A value that writes one Redis argument, as bytes.
fn one(v: impl ToRedisArgs) -> Vec<u8> {
    let mut out = Vec::new();
    v.write_redis_args(&mut out);
    out.into_iter().next().unwrap_or_default()
}

/// Where decisions take their time from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeSource {
    /// Redis's `TIME`, inside the script: one clock for the whole fleet (the default).
    Redis,
    /// The calling node's clock (tests on a fake clock; a fleet whose clocks are known to agree).
    Node,
}

/// How to reach Redis and lay out keys.
#[derive(Debug, Clone, PartialEq)]
pub struct RedisSettings {
    /// `redis://host:port/db` of a single Redis (or a primary behind a failover address).
    pub url: Option<String>,
    /// Seed nodes of a Redis Cluster (`redis://host:port` each); used instead of `url` when non-empty.
    pub cluster: Vec<String>,
    /// Prepended to every key, so several deployments share one Redis.
    pub prefix: String,
    /// Each call's deadline; a call past it fails as UNAVAILABLE.
    pub timeout: Duration,
    /// Calls outstanding per node at most; more fail at once.
    pub max_in_flight: usize,
    /// Where time comes from.
    pub time: TimeSource,
    /// The field names state is written with (read either way).
    pub layout: Layout,
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self {
            url: Some("redis://127.0.0.1:6379".into()),
            cluster: Vec::new(),
            prefix: "quotad:".into(),
            timeout: Duration::from_millis(500),
            max_in_flight: 1024,
            time: TimeSource::Redis,
            layout: Layout::Readable,
        }
    }
}

#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// The Redis store. See the module docs. Its state is shared ([`Inner`]), so a batch in flight is carried to
/// its end by a task of its own even when the call that sent it is cancelled.
pub struct RedisStore {
    inner: Arc<Inner>,
}

impl std::ops::Deref for RedisStore {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.inner
    }
}

impl Clone for RedisStore {
    /// Another handle on the same store (for a task that must outlive its caller).
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

/// What a [`RedisStore`] holds.
pub struct Inner {
    conn: Conn,
    function: String,
    /// `function` + `_end`: the steps of [`ENDING`], which run on a Redis at its `maxmemory`.
    ending_function: String,
    library: String,
    keys: Keys,
    settings: RedisSettings,
    in_flight: Semaphore,
    /// The idempotency window, in nanoseconds (from the rules' capacity).
    window: AtomicU64,
    /// Resources this node has added to the resource index (bounded; cleared when large).
    indexed: DashSet<Arc<str>>,
    /// The day `indexed` is for.
    indexed_day: AtomicU64,
    seed: u64,
    counter: AtomicU64,
    /// What this node does while Redis is down.
    pub(crate) fallback: fallback::Fallback,
    /// This node's name in the heartbeat set.
    node: String,
    /// Calls, and failures by kind: `[calls, timeout, busy, other, full]` (full: Redis at its `maxmemory`
    /// refused the step).
    pub(crate) counts: [AtomicU64; 5],
    /// Script call latency.
    pub(crate) latency: crate::latency::LatencyHistogram,
    /// Each shard's calls queued behind those in flight.
    batcher: Arc<batch::Batcher>,
    /// Batches sent, and the calls they carried.
    pub(crate) batched: [AtomicU64; 2],
    /// The slices of levels' permits this node holds (`local_share`).
    pub(crate) shares: share::Shares,
    /// Shards (a bit each) whose last sweep left expired leases behind: swept alone until done.
    backlog: AtomicU64,
    /// When (the sweep's clock) every shard was last swept.
    last_full_sweep: AtomicU64,
    /// Redis last refused a step for want of memory (and has accepted none that could grow it since).
    full: AtomicBool,
    /// Redis may evict quotad's keys (see [`eviction`]), as last read.
    evicting: AtomicBool,
    /// When (Unix ms) the eviction policy was last read.
    eviction_checked_ms: AtomicU64,
    /// When (Unix ms) a policy that may evict quotad's keys was last warned about.
    eviction_warned_ms: AtomicU64,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.settings.url)
            .field("cluster", &self.settings.cluster)
            .field("prefix", &self.settings.prefix)
            .finish_non_exhaustive()
    }
}

/// How long a day's resource index is kept: two days, so yesterday's names are listed too.
const INDEX_KEPT_MS: u64 = 2 * 86_400_000;

/// The Unix day now (this node's clock: the index only decides what listings show).
pub(crate) fn today() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400)
}

/// This node's clock in Unix milliseconds (heartbeats, and when to read Redis's settings again).
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Why one attempt at a call failed.
enum CallError {
    /// Redis does not have the library.
    Missing,
    /// Anything else.
    Failed(EngineError),
}

use CallError::{Failed, Missing};

/// One call's answer within a batch's: an error there is that call's alone.
fn item(v: Value) -> Result<Value, EngineError> {
    match v {
        Value::ServerError(e) => Err(unavailable(format!("{e:?}"))),
        v => Ok(v),
    }
}

fn unavailable(e: impl std::fmt::Display) -> EngineError {
    EngineError::Unavailable(format!("redis: {e}"))
}

impl RedisStore {
    /// Refuses rules this store cannot keep exactly (see [`args::exact_in_lua`]); its `apply` does too.
    pub fn check_rules(rules: &Rules) -> Result<(), EngineError> {
        args::exact_in_lua(rules)
    }

    /// A store on `settings`. Connects lazily for a single Redis (so quotad starts while Redis is down and
    /// answers as configured); a Cluster's slot map is read now.
    pub async fn connect(settings: RedisSettings) -> Result<Self, EngineError> {
        let conn = if settings.cluster.is_empty() {
            let url = settings.url.clone().unwrap_or_default();
            let client = ::redis::Client::open(url.as_str()).map_err(unavailable)?;
            let config = ::redis::aio::ConnectionManagerConfig::new()
                .set_response_timeout(Some(settings.timeout))
                .set_connection_timeout(Some(settings.timeout))
                .set_number_of_retries(1)
                .set_max_delay(Duration::from_millis(200));
            Conn::Single(
                ConnectionManager::new_lazy_with_config(client, config).map_err(unavailable)?,
            )
        } else {
            let client = ::redis::cluster::ClusterClient::builder(settings.cluster.clone())
                .connection_timeout(settings.timeout)
                .response_timeout(settings.timeout)
                .retries(1)
                .build()
                .map_err(unavailable)?;
            Conn::Cluster(client.get_async_connection().await.map_err(unavailable)?)
        };
        let seed =
            std::hash::BuildHasher::hash_one(&std::hash::RandomState::new(), 0x7175_6f74_u64);
        let (function, library) = library(settings.layout);
        Ok(Self {
            inner: Arc::new(Inner {
                conn,
                ending_function: format!("{function}_end"),
                function,
                library,
                keys: Keys::new(&settings.prefix),
                in_flight: Semaphore::new(settings.max_in_flight.max(1)),
                settings,
                window: AtomicU64::new(300_000_000_000),
                indexed: DashSet::new(),
                indexed_day: AtomicU64::new(0),
                seed,
                counter: AtomicU64::new(1),
                fallback: fallback::Fallback::default(),
                node: format!("{seed:016x}"),
                counts: Default::default(),
                latency: Default::default(),
                batcher: Arc::default(),
                batched: Default::default(),
                shares: share::Shares::default(),
                backlog: AtomicU64::new(0),
                last_full_sweep: AtomicU64::new(0),
                full: AtomicBool::new(false),
                evicting: AtomicBool::new(false),
                eviction_checked_ms: AtomicU64::new(0),
                eviction_warned_ms: AtomicU64::new(0),
            }),
        })
    }

    /// Checks that Redis answers (and, for a single Redis, makes the connection now, on the caller's
    /// runtime, which then drives it).
    pub async fn ping(&self) -> Result<(), EngineError> {
        self.command(&::redis::cmd("PING")).await.map(|_| ())
    }

    /// The key layout.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The settings it was built with.
    pub fn settings(&self) -> &RedisSettings {
        &self.settings
    }

    /// A fresh random 64-bit value (ids): splitmix64 over a per-process seed and a counter.
    fn random(&self) -> u64 {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        crate::engine::lease_id::splitmix64(
            self.seed
                .wrapping_add(n.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
        )
    }

    /// The `now` argument of a call: empty for Redis's clock.
    fn now_arg(&self, now: crate::clock::Nanos) -> String {
        match self.settings.time {
            TimeSource::Redis => String::new(),
            TimeSource::Node => now.to_string(),
        }
    }

    /// Runs one step, bounded in time and in number outstanding. A Redis that does not have the library
    /// (restarted empty, a new replica promoted, `FUNCTION FLUSH`) is sent it and the call made again, so no
    /// client ever sees the miss. A failure marks Redis down for a moment (see [`fallback`]).
    async fn call(&self, inv: &Call) -> Result<Value, EngineError> {
        let started = std::time::Instant::now();
        let result = match inv.shard {
            Some(shard) => self.call_batched(shard, inv).await,
            None => self.call_alone(inv).await,
        };
        self.latency.observe(started.elapsed());
        match &result {
            Ok(_) => self.up(),
            Err(_) => self.fallback.mark_down(),
        }
        result
    }

    /// `inv` sent now, or with the calls of its shard that queued behind those in flight (see `batch`).
    async fn call_batched(&self, shard: u64, inv: &Call) -> Result<Value, EngineError> {
        match self.batcher.enter(shard, inv) {
            batch::Entry::Send(_lane) => self.call_alone(inv).await,
            batch::Entry::Wait(turn) => match turn.await {
                Ok(batch::Turn::Done(result)) => result,
                Ok(batch::Turn::Lead(others, lane)) => self.send_batch(inv, others, lane).await,
                // The call leading the lane went away before sending this one: it goes alone.
                Err(_) => self.call_alone(inv).await,
            },
        }
    }

    /// `own` and `others` in one call; each of `others` is answered, `own`'s answer returned. The call is
    /// carried by a task of its own (holding the lane), so that `own`'s caller going away never leaves the
    /// others without the answer Redis gave them.
    async fn send_batch(
        &self,
        own: &Call,
        others: Vec<batch::Waiter>,
        lane: batch::HandOff,
    ) -> Result<Value, EngineError> {
        // The call before this batch found Redis unreachable: every decision waiting behind it is answered
        // at once (as an Acquire made now would be), instead of each batch waiting out its own timeout.
        // (Releases still try: each one that lands frees what it holds.)
        if !own.ending && self.is_down() {
            let down = || Err(unavailable("unreachable (retried within a second)"));
            for w in others {
                w.answer(down());
            }
            return down();
        }
        if others.is_empty() {
            let answer = self.call_alone(own).await;
            drop(lane);
            return answer;
        }
        let call = Call::batch(std::iter::once(own).chain(others.iter().map(|w| &w.call)));
        let (tx, rx) = tokio::sync::oneshot::channel();
        let inner = self.inner.clone();
        tokio::spawn(async move {
            let n = others.len() + 1;
            inner.batched[0].fetch_add(1, Ordering::Relaxed);
            inner.batched[1].fetch_add(n as u64, Ordering::Relaxed);
            let mut items: Vec<Result<Value, EngineError>> = match inner.call_alone(&call).await {
                Ok(Value::Array(items)) if items.len() == n => {
                    items.into_iter().map(item).collect()
                }
                Ok(other) => {
                    vec![Err(unavailable(format!("a batch of {n} answered {other:?}"))); n]
                }
                Err(e) => vec![Err(e); n],
            };
            drop(lane);
            for (w, r) in others.into_iter().zip(items.drain(1..)) {
                w.answer(r);
            }
            let _ = tx.send(items.pop());
        });
        rx.await
            .ok()
            .flatten()
            .unwrap_or_else(|| Err(unavailable("a batch's call ended without an answer")))
    }

    /// Says this node is alive and counts the live ones (heartbeats within 5 s), for `local`'s share. The
    /// sweeper calls it every sweep.
    pub async fn heartbeat(&self) -> Result<u64, EngineError> {
        let now_ms = unix_ms();
        let mut pipe = ::redis::pipe();
        pipe.cmd("ZADD")
            .arg(self.keys.nodes())
            .arg(now_ms)
            .arg(&self.node)
            .ignore();
        pipe.cmd("ZREMRANGEBYSCORE")
            .arg(self.keys.nodes())
            .arg("-inf")
            .arg(now_ms.saturating_sub(5000))
            .ignore();
        pipe.cmd("PEXPIRE")
            .arg(self.keys.nodes())
            .arg(60_000)
            .ignore();
        pipe.cmd("ZCARD").arg(self.keys.nodes());
        let run = async {
            match &self.conn {
                Conn::Single(c) => pipe.query_async::<(u64,)>(&mut c.clone()).await,
                Conn::Cluster(c) => pipe.query_async::<(u64,)>(&mut c.clone()).await,
            }
        };
        // The heartbeat also keeps the down mark true between calls (health, `local`'s divisor).
        let n = match tokio::time::timeout(self.settings.timeout, run).await {
            Ok(Ok((n,))) => n,
            Ok(Err(e)) => {
                let oom = |s: &::redis::ServerError| s.code() == "OOM";
                let full = e
                    .clone()
                    .into_server_errors()
                    .is_some_and(|all| all.iter().any(|(_, s)| oom(s)));
                self.full.store(full, Ordering::Relaxed);
                self.fallback.mark_down();
                return Err(unavailable(e));
            }
            Err(_) => {
                self.fallback.mark_down();
                return Err(unavailable("heartbeat timed out"));
            }
        };
        self.full.store(false, Ordering::Relaxed);
        self.up();
        self.fallback.set_nodes(n);
        self.check_eviction(false).await;
        Ok(n)
    }

    /// Redis answered. After an outage its data may be gone (a restart without persistence): the resource
    /// index is written again as resources are used.
    fn up(&self) {
        if self.fallback.mark_up() {
            self.indexed.clear();
        }
    }

    /// Live nodes, as last counted.
    pub fn nodes(&self) -> u64 {
        self.fallback.nodes()
    }

    /// True while Redis is marked down (calls go to each resource's `on_store_error`).
    pub fn is_down(&self) -> bool {
        self.fallback.is_down()
    }

    /// True while Redis refuses steps for want of memory (see [`refused`](Self::refused)).
    pub fn is_full(&self) -> bool {
        self.full.load(Ordering::Relaxed)
    }

    /// Runs a plain command (outside the script), bounded like [`call`](Self::call).
    async fn command(&self, cmd: &::redis::Cmd) -> Result<Value, EngineError> {
        let _permit = self.in_flight.try_acquire().map_err(|_| {
            unavailable("too many calls outstanding (Redis is slow or unreachable)")
        })?;
        let run = async {
            match &self.conn {
                Conn::Single(c) => cmd.query_async::<Value>(&mut c.clone()).await,
                Conn::Cluster(c) => cmd.query_async::<Value>(&mut c.clone()).await,
            }
        };
        match tokio::time::timeout(self.settings.timeout, run).await {
            Ok(r) => r.map_err(unavailable),
            Err(_) => Err(unavailable(format!(
                "no answer within {:?}",
                self.settings.timeout
            ))),
        }
    }

    /// Adds `resource` to today's resource index once per node and day (listings read today's and
    /// yesterday's; decisions never do).
    async fn index(&self, resource: &str) {
        let day = today();
        if self.indexed_day.swap(day, Ordering::Relaxed) != day || self.indexed.len() >= 100_000 {
            self.indexed.clear();
        }
        if self.indexed.contains(resource) {
            return;
        }
        let key = self.keys.index(day);
        let mut pipe = ::redis::pipe();
        pipe.cmd("ZADD").arg(&key).arg(0).arg(resource).ignore();
        pipe.cmd("PEXPIRE").arg(&key).arg(INDEX_KEPT_MS).ignore();
        let run = async {
            match &self.conn {
                Conn::Single(c) => pipe.query_async::<()>(&mut c.clone()).await,
                Conn::Cluster(c) => pipe.query_async::<()>(&mut c.clone()).await,
            }
        };
        match tokio::time::timeout(self.settings.timeout, run).await {
            Ok(Ok(())) => {
                self.indexed.insert(Arc::from(resource));
            }
            Ok(Err(e)) => tracing::debug!(error = %e, "resource index not updated"),
            Err(_) => tracing::debug!("resource index not updated: timed out"),
        }
    }
}

impl Inner {
    /// One call on its own (the library loaded first if Redis lost it).
    async fn call_alone(&self, inv: &Call) -> Result<Value, EngineError> {
        let mut result = self.call_once(inv).await;
        if matches!(&result, Err(Missing)) {
            result = match self.load().await {
                Ok(()) => self.call_once(inv).await,
                Err(e) => Err(Failed(e)),
            };
        }
        result.map_err(|e| match e {
            Missing => unavailable("the quotad function could not be loaded"),
            Failed(e) => e,
        })
    }

    async fn call_once(&self, inv: &Call) -> Result<Value, CallError> {
        if let Some(unset) = inv.unset() {
            return Err(Failed(unavailable(format!("{unset} was not set"))));
        }
        self.counts[0].fetch_add(1, Ordering::Relaxed);
        let Ok(_permit) = self.in_flight.try_acquire() else {
            self.counts[2].fetch_add(1, Ordering::Relaxed);
            return Err(Failed(unavailable(
                "too many calls outstanding (Redis is slow or unreachable)",
            )));
        };
        let function = if inv.ending {
            &self.ending_function
        } else {
            &self.function
        };
        let mut cmd = ::redis::cmd("FCALL");
        cmd.arg(function).arg(inv.keys.len());
        for k in &inv.keys {
            cmd.arg(k.as_slice());
        }
        for a in &inv.args {
            cmd.arg(a.as_slice());
        }
        let out = match tokio::time::timeout(self.settings.timeout, self.query(&cmd)).await {
            Ok(Ok(Value::ServerError(e))) if e.code() == "OOM" => return Err(self.refused(&e)),
            Ok(Ok(Value::ServerError(e))) => Err(unavailable(format!("{e:?}"))),
            Ok(Ok(v)) => {
                // (Read first: otherwise every call, on every worker thread, writes one shared cache line.)
                if !inv.ending && self.full.load(Ordering::Relaxed) {
                    self.full.store(false, Ordering::Relaxed);
                }
                return Ok(v);
            }
            Ok(Err(e)) if e.to_string().contains("Function not found") => return Err(Missing),
            Ok(Err(e)) if e.code() == Some("OOM") => return Err(self.refused(&e)),
            Ok(Err(e)) if e.is_timeout() => {
                self.counts[1].fetch_add(1, Ordering::Relaxed);
                return Err(Failed(unavailable(e)));
            }
            Ok(Err(e)) => Err(unavailable(e)),
            Err(_) => {
                self.counts[1].fetch_add(1, Ordering::Relaxed);
                return Err(Failed(unavailable(format!(
                    "no answer within {:?}",
                    self.settings.timeout
                ))));
            }
        };
        self.counts[3].fetch_add(1, Ordering::Relaxed);
        out.map_err(Failed)
    }

    /// Redis is at its `maxmemory` (policy noeviction) and refused a step that could grow it: it is up, so
    /// the sweep still runs (its steps are allowed), while decisions go to each resource's `on_store_error`.
    fn refused(&self, e: &impl std::fmt::Debug) -> CallError {
        self.counts[4].fetch_add(1, Ordering::Relaxed);
        self.full.store(true, Ordering::Relaxed);
        Failed(unavailable(format!(
            "Redis is at its maxmemory and refused the call: {e:?}"
        )))
    }

    async fn query(&self, cmd: &::redis::Cmd) -> ::redis::RedisResult<Value> {
        match &self.conn {
            Conn::Single(c) => cmd.query_async::<Value>(&mut c.clone()).await,
            Conn::Cluster(c) => cmd.query_async::<Value>(&mut c.clone()).await,
        }
    }

    /// Loads the library (on every primary of a Cluster).
    async fn load(&self) -> Result<(), EngineError> {
        let cmd = ::redis::cmd("FUNCTION")
            .arg("LOAD")
            .arg("REPLACE")
            .arg(&self.library)
            .to_owned();
        match tokio::time::timeout(self.settings.timeout, self.query(&cmd)).await {
            Ok(Ok(_)) => {
                tracing::info!(function = %self.function, "quotad's function loaded into Redis");
                Ok(())
            }
            Ok(Err(e)) => Err(unavailable(format!("loading the quotad function: {e}"))),
            Err(_) => Err(unavailable("loading the quotad function timed out")),
        }
    }
}
