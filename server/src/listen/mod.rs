//! Accepting connections: plaintext or TLS (with optional client certificates), each connection counted
//! against `server.http2.max_connections` and closed when its client goes silent.
//!
//! - [`tls`]: the rustls server config from PEM files, reloaded when the files change or on SIGHUP.
//! - [`conn`]: one accepted connection: its slot under the cap, its idle timer and its frame watch.
//! - [`frames`]: closing a connection that floods PING or SETTINGS frames.
//! - [`penalty`]: why connections are closed, and refusing an address at accept after repeated abuse.
//! - [`accept`]: the accept loops that hand connections to the gRPC server.
//! - [`serve`]: hyper's HTTP/2 server on each connection, until shutdown.

pub mod accept;
pub mod conn;
pub mod frames;
pub mod penalty;
pub mod serve;
pub mod tls;

pub use accept::{Incoming, Limits, plaintext, tls as tls_incoming};
pub use conn::Conn;
pub use serve::serve;
pub use tls::{TlsError, TlsReloader};
