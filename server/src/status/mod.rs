//! The status page, served on the metrics listener: `/status` (HTML), `/status.json` (the same data for
//! scripts), and its assets under `/status/`. Everything is served by quotad itself (uPlot 1.6.32, MIT,
//! vendored in `assets/` with its licence); nothing is fetched from the internet.
//!
//! Live updates: the page polls `/status.json` every second. Polling rather than server-sent events: each
//! viewer costs one short request a second and no held connection (the metrics listener gives every
//! connection 30 s in all, and proxies between an operator and quotad often cut streams), and a page left
//! open on a laptop that sleeps simply resumes. History lives in [`history`]: bounded rings per rule.

pub mod history;
pub mod json;

pub use history::History;

/// A file the page needs: (path, content type, body).
type Asset = (&'static str, &'static str, &'static str);

const ASSETS: [Asset; 5] = [
    (
        "/status",
        "text/html; charset=utf-8",
        include_str!("assets/status.html"),
    ),
    (
        "/status/app.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/app.js"),
    ),
    (
        "/status/app.css",
        "text/css; charset=utf-8",
        include_str!("assets/app.css"),
    ),
    (
        "/status/uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/uPlot.iife.min.js"),
    ),
    (
        "/status/uPlot.min.css",
        "text/css; charset=utf-8",
        include_str!("assets/uPlot.min.css"),
    ),
];

/// The asset at `path`, if there is one.
pub fn asset(path: &str) -> Option<(&'static str, &'static str)> {
    let path = if path == "/status/" { "/status" } else { path };
    ASSETS
        .iter()
        .find(|(p, _, _)| *p == path)
        .map(|(_, t, b)| (*t, *b))
}

/// Scripts, styles and data from quotad only; no framing by other sites.
pub const CSP: &str = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'";
