//! Configuration: a TOML file (or the embedded default) plus `QUOTAD_*` environment overrides, read with
//! the `config` crate and validated at start-up into typed values: engine [`Rules`](crate::engine::Rules)
//! and [`ServerSettings`]. A bad config fails with a message naming the key and the problem.
//!
//! - [`file`]: the file's shape (serde).
//! - [`validate`]: checking it and building typed values; [`auth`], [`store`], [`transport`] and [`rls`] for
//!   those sections.
//! - [`load`]: where it comes from (file, embedded default, environment).

pub mod auth;
pub mod file;
pub mod load;
pub mod rls;
pub mod store;
pub mod transport;
pub mod validate;

pub use load::{DEFAULT_CONFIG, load, load_str};
pub use store::StoreSettings;
pub use transport::{Http2Settings, TlsSettings};
pub use validate::{
    ConfigError, LogFormat, MetricsSettings, ServerSettings, Settings, TracingSettings,
};
