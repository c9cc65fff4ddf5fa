//! Whose token a call needs, and where a server address or a token came from: what an error
//! names when it says what to change.

use std::fmt;
use std::path::{Path, PathBuf};

/// The management API when neither a flag, a variable nor the config file names one.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:3001";

/// Whose token a call needs; it decides which variables are read and what a refusal says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A tenant's: apps, deploy, logs.
    Tenant,
    /// The server's admin token: tenants.
    Admin,
    /// Either, for a tenant's own figures or every tenant's: usage, whoami.
    Any,
}

/// Where a token came from, to name the right flag, variable or file when it is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenFrom {
    /// `--token`.
    Flag,
    /// The SKIFF_TOKEN variable.
    EnvToken,
    /// The SKIFF_ADMIN_TOKEN variable.
    EnvAdmin,
    /// The config file `skiff login` wrote.
    Saved(PathBuf),
    /// Typed or piped in (`skiff login`).
    Stdin,
}

impl fmt::Display for TokenFrom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenFrom::Flag => f.write_str("--token"),
            TokenFrom::EnvToken => f.write_str("SKIFF_TOKEN"),
            TokenFrom::EnvAdmin => f.write_str("SKIFF_ADMIN_TOKEN"),
            TokenFrom::Saved(path) => write!(f, "{} (skiff login)", path.display()),
            TokenFrom::Stdin => f.write_str("stdin"),
        }
    }
}

/// Where the management API's address came from, to say where to change it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerFrom {
    /// `--server` or SKIFF_SERVER (clap does not tell which).
    Given,
    /// The config file `skiff login` wrote.
    ConfigFile(PathBuf),
    /// [`DEFAULT_SERVER`].
    Default,
}

/// Where the CA certificate that the client trusts for the server came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaCertFrom {
    /// `skiff login --ca-cert` (which clap also fills from SKIFF_CA_CERT).
    Flag,
    /// The SKIFF_CA_CERT variable.
    Env,
    /// The config file `skiff login` wrote, with the server.
    Saved(PathBuf),
}

/// A CA certificate file (PEM) to trust for the server, besides the public CAs built in, and
/// where it was named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaCert {
    path: PathBuf,
    from: CaCertFrom,
}

impl CaCert {
    pub fn new(path: impl Into<PathBuf>, from: CaCertFrom) -> CaCert {
        CaCert {
            path: path.into(),
            from,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn from(&self) -> &CaCertFrom {
        &self.from
    }
}

impl fmt::Display for CaCertFrom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CaCertFrom::Flag => f.write_str("--ca-cert"),
            CaCertFrom::Env => f.write_str("SKIFF_CA_CERT"),
            CaCertFrom::Saved(path) => write!(f, "{} (skiff login)", path.display()),
        }
    }
}

/// What to do about a token the server `refused` (401: unknown), or that is not allowed (403:
/// a tenant's token on an admin route), or the lack of one.
pub(crate) fn token_help(token: Option<&TokenFrom>, role: Role, refused: bool) -> String {
    let (what, fix) = match role {
        Role::Tenant => (
            "a tenant's token",
            "pass it with --token TOKEN or set SKIFF_TOKEN (`skiff tenants create NAME` prints \
             one), or save it with `skiff login`",
        ),
        Role::Admin => (
            "the admin token",
            "pass it with --token TOKEN or set SKIFF_ADMIN_TOKEN (the token `skiff server` was \
             started with), or save it with `skiff login`",
        ),
        Role::Any => (
            "a tenant's token or the admin token",
            "pass it with --token TOKEN or set SKIFF_TOKEN (or SKIFF_ADMIN_TOKEN, for every \
             tenant's figures), or save one with `skiff login`",
        ),
    };
    match (token, refused) {
        (None, _) => format!("no token was given; this call needs {what}: {fix}"),
        (Some(from), true) => {
            format!("the token from {from} was refused; this call needs {what}: {fix}")
        }
        (Some(from), false) => {
            format!("the token from {from} is a tenant's; this call needs {what}: {fix}")
        }
    }
}
