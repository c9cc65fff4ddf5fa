//! Which server and which token a call uses: flags win over the environment, which wins over
//! the config file `skiff login` writes; the default server is the last resort.

use std::fmt;

use crate::origin::{CaCert, CaCertFrom, DEFAULT_SERVER, Role, ServerFrom, TokenFrom};
use crate::{ClientConfig, ClientError};

/// A bearer token and where it came from. Its `Debug` does not show the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    value: String,
    from: TokenFrom,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("from", &self.from)
            .finish_non_exhaustive()
    }
}

impl Token {
    pub fn new(value: impl Into<String>, from: TokenFrom) -> Token {
        Token {
            value: value.into(),
            from,
        }
    }

    pub fn value(&self) -> &str {
        &self.value
    }

    pub fn from(&self) -> &TokenFrom {
        &self.from
    }

    /// Picks the bearer token from what was given. `given` is `--token`, which clap also fills
    /// from SKIFF_TOKEN; `env_token` and `env_admin` are the SKIFF_TOKEN and SKIFF_ADMIN_TOKEN
    /// variables.
    ///
    /// For admin calls SKIFF_ADMIN_TOKEN wins over SKIFF_TOKEN, so that one shell can hold both
    /// a tenant's token and the admin token; an explicit `--token` wins over both. A `given`
    /// equal to SKIFF_TOKEN is taken to be the variable's. Calls that take either token use
    /// SKIFF_ADMIN_TOKEN only when neither `--token` nor SKIFF_TOKEN gives one.
    ///
    /// `None` is not an error here: a server started with `--insecure-dev` takes calls without
    /// a token. Any other server answers 401, and the error then says what to set.
    pub fn resolve(
        role: Role,
        given: Option<&str>,
        env_token: Option<&str>,
        env_admin: Option<&str>,
    ) -> Option<Token> {
        let present = |v: Option<&str>| v.filter(|v| !v.trim().is_empty()).map(str::to_owned);
        let given = present(given);
        let env_token = present(env_token);
        let env_admin = present(env_admin);
        let from_env = given.is_some() && given == env_token;
        let token = |value, from| Some(Token::new(value, from));
        match (role, given, env_admin) {
            (Role::Tenant | Role::Any, Some(value), _) if from_env => {
                token(value, TokenFrom::EnvToken)
            }
            (Role::Tenant | Role::Any, Some(value), _) => token(value, TokenFrom::Flag),
            (Role::Tenant, None, _) => None,
            (Role::Admin, Some(value), _) if !from_env => token(value, TokenFrom::Flag),
            (Role::Admin, _, Some(value)) => token(value, TokenFrom::EnvAdmin),
            (Role::Admin, Some(value), None) => token(value, TokenFrom::EnvToken),
            (Role::Admin, None, None) => None,
            (Role::Any, None, Some(value)) => token(value, TokenFrom::EnvAdmin),
            (Role::Any, None, None) => None,
        }
    }

    /// The token `skiff login` saved: the last fallback after [`Token::resolve`], for every
    /// role (one may log in with the admin token as well as a tenant's).
    pub fn saved(saved: Option<&ClientConfig>) -> Option<Token> {
        let saved = saved?;
        Some(Token::new(
            saved.token()?,
            TokenFrom::Saved(saved.path().to_path_buf()),
        ))
    }
}

/// A checked server address, without trailing slashes, so that API paths can be appended;
/// and the CA certificate to trust for it, if one was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    url: String,
    from: ServerFrom,
    ca_cert: Option<CaCert>,
}

impl Server {
    /// The management API's address: `given` (`--server`, which clap also fills from
    /// SKIFF_SERVER), else the one `skiff login` saved, else [`DEFAULT_SERVER`]; checked.
    /// The CA certificate saved with the server (`skiff login --ca-cert`) comes with it when
    /// the address is the saved one.
    pub fn resolve(
        given: Option<&str>,
        saved: Option<&ClientConfig>,
    ) -> Result<Server, ClientError> {
        let (server, from) = pick_server(given, saved);
        let mut server = Server::new(&server, from)?;
        if let Some(config) = saved
            && let Some(path) = config.ca_cert()
            && config.server().and_then(|s| check_url(s).ok()).as_deref() == Some(server.url())
        {
            server.ca_cert = Some(CaCert::new(
                path,
                CaCertFrom::Saved(config.path().to_path_buf()),
            ));
        }
        Ok(server)
    }

    /// Checks `server`, an address from `from`: an error names where to fix it.
    pub fn new(server: &str, from: ServerFrom) -> Result<Server, ClientError> {
        match check_url(server) {
            Ok(url) => Ok(Server {
                url,
                from,
                ca_cert: None,
            }),
            Err(problem) => Err(ClientError::InvalidServer { problem, from }),
        }
    }

    /// The same server, whose certificate may also be signed by the CA in `ca_cert` (instead
    /// of any CA saved with it).
    pub fn with_ca_cert(mut self, ca_cert: CaCert) -> Server {
        self.ca_cert = Some(ca_cert);
        self
    }

    /// The CA certificate trusted for this server besides the public CAs built in.
    pub fn ca_cert(&self) -> Option<&CaCert> {
        self.ca_cert.as_ref()
    }

    /// The address, e.g. `http://127.0.0.1:3001`.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn from(&self) -> &ServerFrom {
        &self.from
    }
}

pub(crate) fn pick_server(
    given: Option<&str>,
    saved: Option<&ClientConfig>,
) -> (String, ServerFrom) {
    if let Some(server) = given {
        return (server.to_string(), ServerFrom::Given);
    }
    if let Some(config) = saved
        && let Some(server) = config.server()
    {
        return (
            server.to_string(),
            ServerFrom::ConfigFile(config.path().to_path_buf()),
        );
    }
    (DEFAULT_SERVER.to_string(), ServerFrom::Default)
}

/// The address without trailing slashes, or only what is wrong with it.
fn check_url(server: &str) -> Result<String, String> {
    let trimmed = server.trim().trim_end_matches('/');
    let url = reqwest::Url::parse(trimmed).map_err(|e| format!("`{server}` is not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") || !url.has_host() {
        return Err(format!("`{server}` is not an http:// or https:// URL"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "`{server}` has a query or fragment; give only the server's address"
        ));
    }
    Ok(trimmed.to_string())
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::origin::token_help;

    fn saved_config(text: &str) -> ClientConfig {
        ClientConfig::parse(Path::new("/home/u/.config/skiff/config.toml"), text).unwrap()
    }

    fn shown(t: Option<Token>) -> Option<(String, String)> {
        t.map(|t| (t.value, t.from.to_string()))
    }

    fn it(value: &str, from: &str) -> Option<(String, String)> {
        Some((value.to_string(), from.to_string()))
    }

    #[test]
    fn tenant_commands_prefer_the_admin_variable_over_skiff_token() {
        let pick = |role, given, env_token, env_admin| {
            shown(Token::resolve(role, given, env_token, env_admin))
        };
        // A flag different from SKIFF_TOKEN is the flag, and wins.
        assert_eq!(
            pick(Role::Admin, Some("flag"), Some("tenant"), Some("admin")),
            it("flag", "--token")
        );
        // The value SKIFF_TOKEN put there gives way to SKIFF_ADMIN_TOKEN...
        assert_eq!(
            pick(Role::Admin, Some("tenant"), Some("tenant"), Some("admin")),
            it("admin", "SKIFF_ADMIN_TOKEN")
        );
        // ...and is used when that is all there is.
        assert_eq!(
            pick(Role::Admin, Some("tenant"), Some("tenant"), None),
            it("tenant", "SKIFF_TOKEN")
        );
        assert_eq!(
            pick(Role::Admin, None, None, Some("admin")),
            it("admin", "SKIFF_ADMIN_TOKEN")
        );
        assert_eq!(pick(Role::Admin, None, None, Some("  ")), None);
        // Tenant commands never read the admin token.
        assert_eq!(pick(Role::Tenant, None, None, Some("admin")), None);
        assert_eq!(
            pick(Role::Tenant, Some("t"), Some("t"), None),
            it("t", "SKIFF_TOKEN")
        );
        assert_eq!(
            pick(Role::Tenant, Some("t"), None, None),
            it("t", "--token")
        );
    }

    #[test]
    fn usage_takes_either_token_and_the_admin_variable_last() {
        let pick = |given, env_token, env_admin| {
            shown(Token::resolve(Role::Any, given, env_token, env_admin))
        };
        assert_eq!(
            pick(Some("tenant"), Some("tenant"), Some("admin")),
            it("tenant", "SKIFF_TOKEN")
        );
        assert_eq!(
            pick(Some("flag"), None, Some("admin")),
            it("flag", "--token")
        );
        assert_eq!(
            pick(None, None, Some("admin")),
            it("admin", "SKIFF_ADMIN_TOKEN")
        );
        assert_eq!(pick(None, None, None), None);
        let help = token_help(None, Role::Any, false);
        assert!(
            help.contains("SKIFF_TOKEN") && help.contains("SKIFF_ADMIN_TOKEN"),
            "{help}"
        );
    }

    #[test]
    fn the_saved_token_is_the_last_fallback_for_every_role() {
        let config = saved_config("server = \"http://h:3001\"\ntoken = \"saved\"\n");
        let pick = |role, given, env_token, env_admin, saved: Option<&ClientConfig>| {
            shown(Token::resolve(role, given, env_token, env_admin).or_else(|| Token::saved(saved)))
        };
        let saved = Some(&config);
        let file = "/home/u/.config/skiff/config.toml (skiff login)";
        for role in [Role::Tenant, Role::Admin, Role::Any] {
            assert_eq!(
                pick(role, None, None, None, saved),
                it("saved", file),
                "{role:?}"
            );
            // A flag or a variable wins over the file...
            assert_eq!(
                pick(role, Some("flag"), None, None, saved),
                it("flag", "--token"),
                "{role:?}"
            );
            assert_eq!(
                pick(role, Some("env"), Some("env"), None, saved),
                it("env", "SKIFF_TOKEN"),
                "{role:?}"
            );
            // ...and a blank one does not count.
            assert_eq!(
                pick(role, Some(" "), Some(" "), None, saved),
                it("saved", file),
                "{role:?}"
            );
        }
        for role in [Role::Admin, Role::Any] {
            assert_eq!(
                pick(role, None, None, Some("admin"), saved),
                it("admin", "SKIFF_ADMIN_TOKEN")
            );
        }
        // Tenant commands never read the admin variable: the file comes next.
        assert_eq!(
            pick(Role::Tenant, None, None, Some("admin"), saved),
            it("saved", file)
        );
        // A file without a token, or no file, leaves no token.
        let server_only = saved_config("server = \"http://h:3001\"\n");
        assert_eq!(
            pick(Role::Tenant, None, None, None, Some(&server_only)),
            None
        );
        assert_eq!(pick(Role::Any, None, None, None, None), None);
    }

    #[test]
    fn the_server_is_the_flag_or_variable_then_the_saved_one_then_the_default() {
        let config = saved_config("server = \"http://saved:3001\"\n");
        let path = PathBuf::from("/home/u/.config/skiff/config.toml");
        assert_eq!(
            pick_server(Some("http://given:3001"), Some(&config)),
            ("http://given:3001".to_string(), ServerFrom::Given)
        );
        assert_eq!(
            pick_server(None, Some(&config)),
            (
                "http://saved:3001".to_string(),
                ServerFrom::ConfigFile(path)
            )
        );
        let token_only = saved_config("token = \"t\"\n");
        for saved in [Some(&token_only), None] {
            assert_eq!(
                pick_server(None, saved),
                (DEFAULT_SERVER.to_string(), ServerFrom::Default)
            );
        }
    }

    #[test]
    fn server_urls_lose_trailing_slashes_and_must_be_http() {
        for given in [
            "http://127.0.0.1:3001",
            "http://127.0.0.1:3001/",
            " http://127.0.0.1:3001// ",
        ] {
            let server = Server::new(given, ServerFrom::Given).unwrap();
            assert_eq!(server.url(), "http://127.0.0.1:3001");
        }
        let server = Server::new("https://skiff.example.com/api/", ServerFrom::Given).unwrap();
        assert_eq!(server.url(), "https://skiff.example.com/api");
        for bad in [
            "127.0.0.1:3001",
            "localhost",
            "ftp://x",
            "http://x/?a=1",
            "",
        ] {
            let err = Server::new(bad, ServerFrom::Given).unwrap_err().to_string();
            assert!(err.contains("SKIFF_SERVER"), "{bad}: {err}");
        }
    }

    #[test]
    fn the_ca_saved_with_a_server_comes_with_that_server_only() {
        let config = saved_config(
            "server = \"https://saved:3001/\"\ntoken = \"t\"\nca_cert = \"/home/u/ca.pem\"\n",
        );
        let saved_ca = Some(CaCert::new(
            "/home/u/ca.pem",
            CaCertFrom::Saved(PathBuf::from("/home/u/.config/skiff/config.toml")),
        ));
        let server = Server::resolve(None, Some(&config)).unwrap();
        assert_eq!(server.ca_cert(), saved_ca.as_ref());
        // The same server given again (a trailing slash does not matter) keeps it...
        let server = Server::resolve(Some("https://saved:3001"), Some(&config)).unwrap();
        assert_eq!(server.ca_cert(), saved_ca.as_ref());
        // ...another server does not get it, and one given explicitly wins.
        let server = Server::resolve(Some("https://other:3001"), Some(&config)).unwrap();
        assert_eq!(server.ca_cert(), None);
        let flag = CaCert::new("/tmp/other.pem", CaCertFrom::Flag);
        let server = Server::resolve(None, Some(&config))
            .unwrap()
            .with_ca_cert(flag.clone());
        assert_eq!(server.ca_cert(), Some(&flag));
    }

    #[test]
    fn a_bad_saved_server_names_the_config_file() {
        let path = PathBuf::from("/home/u/.config/skiff/config.toml");
        let err = Server::new("127.0.0.1:3001", ServerFrom::ConfigFile(path))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`server` in the client config file /home/u/.config/skiff/config.toml"),
            "{err}"
        );
        assert!(err.contains("skiff login --server URL"), "{err}");
        assert_eq!(
            Server::new("http://h:3001/", ServerFrom::Default)
                .unwrap()
                .url,
            "http://h:3001"
        );
    }
}
