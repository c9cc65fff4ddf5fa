//! One Redis server as skiff reaches it, for the key-value backend and for a cluster's shared
//! state alike: the connection is made on first use (so skiff starts while Redis is down) and
//! remade by itself after Redis goes away (`redis::aio::ConnectionManager`); every exchange is
//! bounded by a timeout, so a Redis that hangs holds no caller forever; and every message
//! names Redis by address and database, never with the password from the URL.

use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{Client, Cmd, FromRedisValue, Pipeline, RedisError, ScriptInvocation};

use crate::StoreError;

/// How long one Redis call may take before the operation fails as unavailable.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// A Redis server at one URL.
pub struct RedisConnection {
    client: Client,
    /// Redis' address and database, for messages: `127.0.0.1:6379/0`.
    target: String,
    /// Whatever of the URL must not appear in a message.
    secrets: Vec<String>,
    timeout: Duration,
    manager: tokio::sync::OnceCell<ConnectionManager>,
}

impl RedisConnection {
    /// The Redis at `url` (`redis://[user:password@]host[:port][/db]`, `rediss://` for TLS,
    /// `redis+unix://`), with the default timeout. Only parses the URL: fails with
    /// [`StoreError::Invalid`] on a malformed one.
    pub fn open(url: &str) -> Result<RedisConnection, StoreError> {
        let mut secrets = url_secrets(url);
        let client = Client::open(url).map_err(|e| {
            StoreError::Invalid(scrub(&format!("invalid Redis URL: {e}"), &secrets))
        })?;
        let info = client.get_connection_info();
        if let Some(password) = info.redis_settings().password() {
            secrets.push(password.to_owned());
        }
        secrets.retain(|s| !s.is_empty());
        let target = scrub(
            &format!("{}/{}", info.addr(), info.redis_settings().db()),
            &secrets,
        );
        Ok(RedisConnection {
            client,
            target,
            secrets,
            timeout: DEFAULT_TIMEOUT,
            manager: tokio::sync::OnceCell::new(),
        })
    }

    /// The same Redis with another bound on each exchange, and a connection of its own.
    pub fn with_timeout(&self, timeout: Duration) -> RedisConnection {
        RedisConnection {
            client: self.client.clone(),
            target: self.target.clone(),
            secrets: self.secrets.clone(),
            timeout,
            manager: tokio::sync::OnceCell::new(),
        }
    }

    /// Redis' address and database number, as shown in messages (no credentials).
    pub fn target(&self) -> &str {
        &self.target
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The client, for what needs a connection of its own (a subscription).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// `message` without the URL's credentials.
    pub fn scrub(&self, message: &str) -> String {
        scrub(message, &self.secrets)
    }

    /// The shared connection, made on first use. Inside an async call because the manager
    /// spawns its reconnect tasks on the runtime that creates it.
    pub async fn connection(&self) -> Result<ConnectionManager, StoreError> {
        let manager = self
            .manager
            .get_or_try_init(|| async {
                // Few retries inside one call: the caller gets its error quickly while Redis is
                // down, and the next call starts a fresh attempt anyway.
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(self.timeout))
                    .set_response_timeout(Some(self.timeout))
                    .set_number_of_retries(1)
                    .set_min_delay(Duration::from_millis(50))
                    .set_max_delay(Duration::from_millis(500));
                ConnectionManager::new_lazy_with_config(self.client.clone(), config)
                    .map_err(|e| self.error(&e))
            })
            .await?;
        Ok(manager.clone())
    }

    /// Runs one Redis exchange within the timeout.
    pub async fn timed<T>(
        &self,
        work: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        tokio::time::timeout(self.timeout, work)
            .await
            .unwrap_or_else(|_| {
                Err(StoreError::Unavailable(format!(
                    "Redis at {} did not answer within {:?}",
                    self.target, self.timeout
                )))
            })
    }

    pub async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, StoreError> {
        self.timed(async {
            let mut connection = self.connection().await?;
            cmd.query_async(&mut connection)
                .await
                .map_err(|e| self.error(&e))
        })
        .await
    }

    pub async fn pipeline<T: FromRedisValue>(&self, pipe: &Pipeline) -> Result<T, StoreError> {
        self.timed(async {
            let mut connection = self.connection().await?;
            pipe.query_async(&mut connection)
                .await
                .map_err(|e| self.error(&e))
        })
        .await
    }

    /// Runs a Lua script (loading it first if Redis does not have it).
    pub async fn invoke<T: FromRedisValue>(
        &self,
        invocation: &ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        self.timed(async {
            let mut connection = self.connection().await?;
            invocation
                .invoke_async(&mut connection)
                .await
                .map_err(|e| self.error(&e))
        })
        .await
    }

    /// What a failed exchange means for the caller, in words without credentials.
    pub fn error(&self, e: &RedisError) -> StoreError {
        let message = self.scrub(&e.to_string());
        if e.code() == Some("WRONGTYPE") {
            // Not transient: something other than skiff wrote a key of another type under
            // skiff's prefix.
            return StoreError::Invalid(format!(
                "Redis at {} holds a value of the wrong type: {message}",
                self.target
            ));
        }
        StoreError::Unavailable(format!("Redis at {}: {message}", self.target))
    }
}

/// The credentials written in a URL (`user:password` and `password`), found without parsing
/// it, so that even the message about a URL that does not parse can leave them out.
fn url_secrets(url: &str) -> Vec<String> {
    let Some(start) = url.find("://") else {
        return Vec::new();
    };
    let rest = &url[start + 3..];
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let Some(at) = authority.rfind('@') else {
        return Vec::new();
    };
    let userinfo = &authority[..at];
    let mut secrets = vec![userinfo.to_owned()];
    if let Some((_, password)) = userinfo.split_once(':') {
        secrets.push(password.to_owned());
    }
    secrets.retain(|s| !s.is_empty());
    secrets
}

fn scrub(message: &str, secrets: &[String]) -> String {
    // Longest first, so that `user:password` is replaced whole before `password`.
    let mut secrets: Vec<&String> = secrets.iter().collect();
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    secrets
        .into_iter()
        .fold(message.to_owned(), |m, s| m.replace(s.as_str(), "***"))
}
