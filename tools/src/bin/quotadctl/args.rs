//! The command line, as clap derives it.

use std::{path::PathBuf, time::Duration};

use clap::{Parser, Subcommand};

/// quotadctl: look at and steer a running quotad (resources, leases, breakers, reloads).
#[derive(Debug, Parser)]
#[command(name = "quotadctl", version, about, long_about = None)]
pub struct Cli {
    /// quotad's gRPC address (http:// or https://; a bare host:port means http://).
    #[arg(
        long,
        global = true,
        env = "QUOTADCTL_ADDR",
        default_value = "http://127.0.0.1:50051"
    )]
    pub addr: String,
    /// CA certificate (PEM) to verify quotad's TLS certificate; implies https.
    #[arg(long, global = true, value_name = "PEM")]
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM) for mTLS (with --key).
    #[arg(long, global = true, value_name = "PEM", requires = "key")]
    pub cert: Option<PathBuf>,
    /// Client key (PEM) for mTLS (with --cert).
    #[arg(long, global = true, value_name = "PEM", requires = "cert")]
    pub key: Option<PathBuf>,
    /// The name in quotad's certificate, when it is not the address's host.
    #[arg(long, global = true, value_name = "NAME")]
    pub tls_domain: Option<String>,
    /// Bearer token of an identity with the admin role (TLS only). Prefer the environment variable.
    #[arg(long, global = true, env = "QUOTADCTL_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print JSON instead of tables (for scripts).
    #[arg(long, global = true)]
    pub json: bool,
    /// Seconds to wait for each answer.
    #[arg(long, global = true, default_value = "5", value_name = "SECONDS")]
    pub timeout: f64,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The server at a glance: config version, live keys and leases against their caps, breakers, pauses.
    Status,
    /// Resources with their usage, filtered and paged.
    Resources(ResourceFilter),
    /// Live leases: list (filtered, paged) or revoke one.
    #[command(subcommand)]
    Leases(LeaseCommand),
    /// A resource's shared circuit breaker: show, reset, or force open for a while.
    #[command(subcommand)]
    Breaker(BreakerCommand),
    /// Why an Acquire would be denied: evaluates one without debiting (each level, the breaker, the pause).
    Explain {
        #[command(flatten)]
        target: Target,
        /// Tokens to ask for.
        #[arg(long, default_value = "1")]
        permits: u64,
        /// The priority class to ask as (default: the resource's default class).
        #[arg(long, default_value = "")]
        priority: String,
        /// Explain as this configured identity (its tenant binding and bypass).
        #[arg(long, default_value = "")]
        identity: String,
    },
    /// A live table of the resources, refreshed every --every (Ctrl-C to stop).
    Watch {
        #[command(flatten)]
        filter: ResourceFilter,
        /// How often to refresh.
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        every: Duration,
        /// Stop after this many refreshes (default: until interrupted).
        #[arg(long)]
        count: Option<u64>,
    },
    /// Has the server read its config file again (as SIGHUP does).
    Reload,
    /// Config files, checked locally (no server needed).
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Prints shell completions (bash, zsh, fish, elvish, powershell) to stdout.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Clone, clap::Args)]
pub struct ResourceFilter {
    /// Only resources whose name starts with this.
    #[arg(long, default_value = "")]
    pub prefix: String,
    /// Only resources of this rule (the configured name or glob).
    #[arg(long, default_value = "")]
    pub rule: String,
    /// Resources per page (the server caps it).
    #[arg(long, default_value = "100")]
    pub page_size: u32,
    /// Start at this page (a previous answer's next_page_token).
    #[arg(long, default_value = "")]
    pub page_token: String,
    /// Every page, not just one.
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, Subcommand)]
pub enum LeaseCommand {
    /// Live leases.
    List {
        /// Only this resource's leases.
        #[arg(long, default_value = "")]
        resource: String,
        /// Only resources whose name starts with this.
        #[arg(long, default_value = "")]
        prefix: String,
        /// Only resources of this rule.
        #[arg(long, default_value = "")]
        rule: String,
        /// Leases per page.
        #[arg(long, default_value = "100")]
        page_size: u32,
        /// Start at this page.
        #[arg(long, default_value = "")]
        page_token: String,
    },
    /// Ends a lease now: its slot is freed (the holder's release then finds it gone).
    Revoke {
        /// The lease id.
        lease_id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum BreakerCommand {
    /// The breaker, adaptive rate and pause of a resource.
    Show(Target),
    /// Closes the breaker and clears its window.
    Reset(Target),
    /// Opens the breaker for --for (the server caps it at the resource's max_open_duration).
    Open {
        #[command(flatten)]
        target: Target,
        /// How long.
        #[arg(long = "for", value_parser = humantime::parse_duration)]
        duration: Duration,
    },
}

#[derive(Debug, Clone, clap::Args)]
pub struct Target {
    /// The resource.
    pub resource: String,
    /// Descriptors, for a partitioned breaker: -d tenant=acme (repeatable).
    #[arg(short = 'd', long = "descriptor", value_parser = descriptor)]
    pub descriptors: Vec<(String, String)>,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Parses and validates a config file as the server would, and says what it declares.
    Check {
        /// The file (default: the embedded default config).
        path: Option<PathBuf>,
    },
}

fn descriptor(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!(
            "'{s}': descriptors are key=value, e.g. tenant=acme"
        )),
    }
}
