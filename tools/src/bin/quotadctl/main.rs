//! quotadctl: look at and steer a running quotad from a terminal or a script.
//!
//! ```text
//! quotadctl status                                  # the server at a glance
//! quotadctl resources --prefix partner. --all       # usage, filtered and paged
//! quotadctl leases list --resource bedrock.invoke   # live leases; `leases revoke ID`
//! quotadctl breaker show bedrock.invoke             # `breaker reset R`, `breaker open R --for 30s`
//! quotadctl explain partner.stripe -d tenant=acme   # why an acquire would be denied, level by level
//! quotadctl watch                                   # a live table
//! quotadctl reload; quotadctl config check FILE; quotadctl completions bash
//! ```
//!
//! Tables on a terminal (coloured), plain when piped, `--json` for scripts. `--addr`, `--ca`, `--cert`/`--key`,
//! `--tls-domain` and `--token` (or QUOTADCTL_TOKEN) reach a quotad with TLS and identities.
//!
//! - `args.rs`: the command line (clap).
//! - `connect.rs`: the channel, and errors worded for the person at the terminal.
//! - `commands.rs`: one function per subcommand.
//! - `render.rs`: tables, colour and JSON.

// A function fits on a screen (clippy.toml: 80 lines); tests may run longer.
#![warn(clippy::too_many_lines)]
#![cfg_attr(test, allow(clippy::too_many_lines))]

/// `println!` that ends the program quietly when stdout is closed (`quotadctl watch | head`).
macro_rules! say {
    ($($t:tt)*) => { $crate::render::write_out(&format!("{}\n", format!($($t)*))) };
}

mod args;
mod commands;
mod connect;
mod render;

use std::{io::IsTerminal, process::ExitCode, time::Duration};

use clap::{CommandFactory, Parser};

use crate::{
    args::{Cli, Command, ConfigCommand, ResourceFilter},
    connect::{Conn, Failure},
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Completions { shell } => completions(*shell),
        Command::Config(ConfigCommand::Check { path }) => {
            commands::config_check(path.as_deref(), cli.json)
        }
        _ => remote(&cli),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("quotadctl: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Shell completions on stdout (generated into memory first: a closed pipe is an error, not a panic).
fn completions(shell: clap_complete::Shell) -> Result<(), Failure> {
    use std::io::Write;
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "quotadctl", &mut script);
    match std::io::stdout().write_all(&script) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(Failure(format!("stdout: {e}")))
        }
        _ => Ok(()),
    }
}

/// The subcommands that talk to quotad, on a small runtime of their own.
fn remote(cli: &Cli) -> Result<(), Failure> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure(format!("cannot start the runtime: {e}")))?;
    runtime.block_on(async {
        let mut c = connect::connect(cli)?;
        match &cli.command {
            Command::Status => commands::status(&mut c, cli.json).await,
            Command::Resources(f) => commands::resources(&mut c, f, cli.json).await,
            Command::Leases(l) => commands::leases(&mut c, l, cli.json).await,
            Command::Breaker(b) => commands::breaker(&mut c, b, cli.json).await,
            Command::Watch {
                filter,
                every,
                count,
            } => watch(&mut c, filter, *every, *count, cli.json).await,
            Command::Reload => commands::reload(&mut c, cli.json).await,
            Command::Explain {
                target,
                permits,
                priority,
                identity,
            } => {
                let ask = (*permits, priority.as_str(), identity.as_str());
                commands::explain_acquire(&mut c, target, ask, cli.json).await
            }
            Command::Config(_) | Command::Completions { .. } => Ok(()),
        }
    })
}

/// Refreshes a resource table every `every` until `count` refreshes or Ctrl-C. On a terminal the screen is
/// redrawn; piped (or with --json, one JSON object per line) each refresh follows the last.
async fn watch(
    c: &mut Conn,
    f: &ResourceFilter,
    every: Duration,
    count: Option<u64>,
    json: bool,
) -> Result<(), Failure> {
    let every = every.max(Duration::from_millis(100));
    let redraw = std::io::stdout().is_terminal() && !json;
    let mut n = 0u64;
    loop {
        let (list, last) = commands::resources_of(c, f, f.all).await?;
        if json {
            let rows: Vec<serde_json::Value> = list.iter().map(render::resource).collect();
            say!(
                "{}",
                serde_json::json!({ "at": render_now(), "config_version": last.config_version, "resources": rows })
            );
        } else {
            if redraw {
                render::write_out("\x1b[2J\x1b[H");
            }
            say!(
                "quotad at {}, {}, config version {} (every {:?}; Ctrl-C to stop)",
                c.addr,
                render_now(),
                last.config_version,
                every
            );
            let mut t = render::Table::new(render::RESOURCE_HEADERS);
            list.iter().for_each(|r| t.row(render::resource_row(r)));
            t.print();
        }
        n += 1;
        if count.is_some_and(|c| n >= c) {
            return Ok(());
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

fn render_now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}
