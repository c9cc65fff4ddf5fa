//! The client of a `skiff server`'s management API, for the `skiff` command line, the tests,
//! and tools to come (the containerd shim, dashboards, scripts in Rust). It finds the server
//! and the token the way the CLI documents it (flags, then SKIFF_* variables, then the file
//! `skiff login` saves), makes typed calls ([`Client`]), streams an app's logs
//! ([`LogStream`]), and reads and writes that login file ([`ClientConfig`]). Every failure is
//! a [`ClientError`] whose message says what to do. It prints nothing and parses no
//! arguments: that is the CLI's job.
//!
//! ```no_run
//! # async fn example() -> Result<(), skiff_client::ClientError> {
//! use skiff_client::{Client, Role};
//!
//! let client = Client::from_env(Role::Tenant, None, None)?;
//! for app in client.apps().await?.decode()?.apps {
//!     println!("{} {}", app.name, app.url);
//! }
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]

mod client;
mod config;
mod error;
mod logs;
mod origin;
mod resolve;

pub use client::{Client, Reply, UsageQuery};
pub use config::{ClientConfig, default_config_path};
pub use error::{ApiError, ClientError};
pub use logs::LogStream;
pub use origin::{CaCert, CaCertFrom, DEFAULT_SERVER, Role, ServerFrom, TokenFrom};
/// The status of a [`Reply`] or an [`ApiError`] (`http`'s, as reqwest and axum use).
pub use reqwest::StatusCode;
pub use resolve::{Server, Token};

/// The management API's wire types (request and answer bodies, paths, name rules), shared with
/// the server so that the two cannot drift apart.
pub use skiff_api as api;
