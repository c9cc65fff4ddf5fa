//! [`ClientError`]: every way a call can fail, each with the message a person sees.

use std::fmt;
use std::path::PathBuf;

use reqwest::StatusCode;
use skiff_api::{ErrorBody, ErrorCode, ErrorDetail, InvalidName};

use crate::origin::{CaCert, CaCertFrom, Role, ServerFrom, TokenFrom, token_help};

/// Why a call, or reading or writing the login file, failed. The messages are for people: they
/// say what to do. Where one carries its cause (an I/O or HTTP error), the message includes it,
/// so it is not also given as [`std::error::Error::source`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error(
        "cannot read the client config file {}: {error}; fix its permissions, or point \
         SKIFF_CONFIG at another file",
        path.display()
    )]
    ConfigUnreadable {
        path: PathBuf,
        error: std::io::Error,
    },

    #[error(
        "the client config file {} is not valid TOML:\n{message}\nfix it, or delete it and run \
         `skiff login` again",
        path.display()
    )]
    ConfigNotToml { path: PathBuf, message: String },

    #[error(
        "unknown key `{key}` in the client config file {}; it holds only `server`, `token` \
         and `ca_cert`: remove `{key}` or correct its spelling",
        path.display()
    )]
    ConfigUnknownKey { path: PathBuf, key: String },

    #[error(
        "`{key}` in the client config file {} must be a string, e.g. {key} = \"{}\"; fix it, or \
         run `skiff login` again",
        path.display(),
        match key.as_str() {
            "server" => "http://127.0.0.1:3001",
            "ca_cert" => "/path/to/ca.pem",
            _ => "skf_...",
        }
    )]
    ConfigNotAString { path: PathBuf, key: String },

    #[error("cannot write the client config as TOML: {0}")]
    ConfigNotSerializable(toml::ser::Error),

    #[error(
        "cannot write the client config file {}: {error}; check the folder's permissions, or \
         point SKIFF_CONFIG at another file",
        path.display()
    )]
    ConfigUnwritable {
        path: PathBuf,
        error: std::io::Error,
    },

    /// The server's address is not an http(s) URL; `problem` says what is wrong with it.
    #[error("{}", invalid_server(problem, from))]
    InvalidServer { problem: String, from: ServerFrom },

    /// An app or tenant name that is not a DNS label.
    #[error(transparent)]
    InvalidName(#[from] InvalidName),

    #[error("cannot set up the HTTP client: {0}")]
    HttpClient(reqwest::Error),

    /// The CA certificate to trust for the server cannot be used; `problem` says why.
    #[error("{}", ca_cert_problem(path, from, problem))]
    CaCert {
        path: PathBuf,
        from: CaCertFrom,
        problem: String,
    },

    /// The request got no answer (or its answer broke off).
    #[error("{}", transport(base, from, ca_cert.as_ref(), error))]
    Transport {
        base: String,
        from: ServerFrom,
        /// The CA certificate trusted for the server besides the built-in ones, if any.
        ca_cert: Option<CaCert>,
        error: reqwest::Error,
    },

    /// The server answered with an error.
    #[error("{0}")]
    Api(Box<ApiError>),

    /// A 2xx answer that is not the JSON this client expects.
    #[error(
        "the server's answer is not the JSON this client expects ({0}); is the skiff server the \
         same version as this client?"
    )]
    UnexpectedAnswer(serde_json::Error),

    /// A log stream ended by something other than the server: `reason` says what.
    #[error("the log stream broke off: {0}")]
    LogStreamBroke(String),
}

impl ClientError {
    /// A request to the server at `base` (from `from`, trusting `ca_cert` besides the
    /// built-in CAs) that got no answer.
    pub(crate) fn transport(
        base: &str,
        from: &ServerFrom,
        ca_cert: Option<&CaCert>,
        error: reqwest::Error,
    ) -> ClientError {
        ClientError::Transport {
            base: base.to_string(),
            from: from.clone(),
            ca_cert: ca_cert.cloned(),
            error,
        }
    }
}

fn invalid_server(problem: &str, from: &ServerFrom) -> String {
    match from {
        ServerFrom::ConfigFile(path) => format!(
            "`server` in the client config file {}: {problem}; correct it there, run `skiff \
             login --server URL` again, or pass --server",
            path.display()
        ),
        ServerFrom::Given | ServerFrom::Default => {
            format!("{problem}; write e.g. --server http://127.0.0.1:3001 (or set SKIFF_SERVER)")
        }
    }
}

fn ca_cert_problem(path: &std::path::Path, from: &CaCertFrom, problem: &str) -> String {
    let fix = match from {
        CaCertFrom::Flag => "give --ca-cert the PEM file of the CA that signed the server's \
                             certificate"
            .to_string(),
        CaCertFrom::Env => "point SKIFF_CA_CERT at the PEM file of the CA that signed the \
                            server's certificate, or unset it"
            .to_string(),
        CaCertFrom::Saved(config) => format!(
            "`skiff login --ca-cert` saved it in {} with the server: run `skiff login --ca-cert \
             FILE` again with the CA's PEM file, or set SKIFF_CA_CERT",
            config.display()
        ),
    };
    format!(
        "the CA certificate {} (from {from}) {problem}; {fix}",
        path.display()
    )
}

/// The TLS error at the bottom of `error`, if the connection failed in the handshake. (An
/// `io::Error` hides the error it wraps from `source()`, and reqwest's is an `io::Error`
/// around an `io::Error` around rustls's: `get_ref` finds each.)
fn tls_error<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    if let Some(tls) = error.downcast_ref::<rustls::Error>() {
        return Some(tls);
    }
    if let Some(io) = error.downcast_ref::<std::io::Error>()
        && let Some(inner) = io.get_ref()
    {
        return tls_error(inner);
    }
    error.source().and_then(tls_error)
}

/// What to do about a server certificate the client refused (`tls`).
fn untrusted_certificate(
    base: &str,
    tls: &rustls::Error,
    ca_cert: Option<&CaCert>,
) -> Option<String> {
    use rustls::CertificateError as E;
    let rustls::Error::InvalidCertificate(problem) = tls else {
        return None;
    };
    let trusted = match ca_cert {
        Some(ca) => format!(
            "the public CAs built into skiff and the CA in {} (from {})",
            ca.path().display(),
            ca.from()
        ),
        None => "the public CAs built into skiff".to_string(),
    };
    let fix = match problem {
        E::NotValidForName | E::NotValidForNameContext { .. } => {
            "use the server's address under a name (or IP address) its certificate was made \
             for, or give the server a certificate for this one"
                .to_string()
        }
        E::Expired | E::ExpiredContext { .. } | E::NotValidYet | E::NotValidYetContext { .. } => {
            "renew the server's certificate (or check this machine's clock)".to_string()
        }
        // webpki's error, which rustls carries as text only.
        E::Other(other) if format!("{other:?}").contains("CaUsedAsEndEntity") => {
            "the server's own certificate is a CA certificate (basic constraints CA:TRUE); give \
             the server a certificate with CA:FALSE (`openssl req -x509 ... -addext \
             basicConstraints=critical,CA:FALSE`), or one that a CA signed"
                .to_string()
        }
        _ => match ca_cert {
            Some(ca) => format!(
                "is {} the certificate of the CA that signed the server's certificate? (for a \
                 self-signed server certificate, it is that certificate itself)",
                ca.path().display()
            ),
            None => "if the server's certificate is signed by a private CA (or self-signed), \
                     pass that CA's certificate: `skiff login --ca-cert ca.pem` (saved with the \
                     server for later commands), or set SKIFF_CA_CERT=ca.pem"
                .to_string(),
        },
    };
    Some(format!(
        "the skiff server at {base} presented a certificate that is not trusted ({tls}); this \
         client trusts {trusted}; {fix}"
    ))
}

/// Why a request never got an answer, and what to check.
fn transport(
    base: &str,
    from: &ServerFrom,
    ca_cert: Option<&CaCert>,
    err: &reqwest::Error,
) -> String {
    if let Some(message) = tls_error(err).and_then(|tls| untrusted_certificate(base, tls, ca_cert))
    {
        return message;
    }
    // reqwest's own text is "error sending request for url (...)"; the cause at the bottom of
    // the chain ("Connection refused", "dns error: ...") is the part that helps.
    let mut cause: &dyn std::error::Error = err;
    while let Some(source) = cause.source() {
        cause = source;
    }
    if err.is_connect() {
        let change = match from {
            ServerFrom::Given => "set --server or SKIFF_SERVER".to_string(),
            ServerFrom::ConfigFile(path) => format!(
                "the address is from {}: pass --server, or run `skiff login --server URL` again",
                path.display()
            ),
            ServerFrom::Default => {
                "set --server or SKIFF_SERVER, or save one with `skiff login --server URL`".into()
            }
        };
        format!(
            "cannot reach the skiff server at {base}: {cause}; is `skiff server` running? \
             ({change})"
        )
    } else if err.is_timeout() {
        format!("the skiff server at {base} did not answer in time: {cause}")
    } else {
        format!("talking to the skiff server at {base} failed: {cause}")
    }
}

/// A non-2xx answer. Its message is the server's [`ErrorBody`] message, verbatim (it may be a
/// whole manifest report), plus a hint where the client knows better than the server what to
/// do (which flag or variable gave the refused token).
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    detail: Option<ErrorDetail>,
    /// The body as text, when it is not an [`ErrorBody`].
    text: String,
    token: Option<TokenFrom>,
    role: Role,
}

impl ApiError {
    pub(crate) fn new(
        status: StatusCode,
        body: &[u8],
        token: Option<TokenFrom>,
        role: Role,
    ) -> ApiError {
        let (detail, text) = match serde_json::from_slice::<ErrorBody>(body) {
            Ok(parsed) => (Some(parsed.error), String::new()),
            Err(_) => (None, String::from_utf8_lossy(body).trim().to_string()),
        };
        ApiError {
            status,
            detail,
            text,
            token,
            role,
        }
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The server's error, if the answer was one of the management API's.
    pub fn detail(&self) -> Option<&ErrorDetail> {
        self.detail.as_ref()
    }

    /// Where the token sent came from, if one was.
    pub fn token_from(&self) -> Option<&TokenFrom> {
        self.token.as_ref()
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(detail) = &self.detail else {
            let shown: String = self.text.chars().take(200).collect();
            let shown = if shown.is_empty() {
                String::new()
            } else {
                format!(": {shown}")
            };
            return write!(
                f,
                "the server answered {}{shown}; that is not a skiff management API answer: is \
                 --server (or SKIFF_SERVER) the address of `skiff server`'s API listener?",
                self.status
            );
        };
        let hint = match detail.code {
            ErrorCode::Unauthorized => Some(token_help(self.token.as_ref(), self.role, true)),
            // A tenant's token on an admin route; the reverse (the admin token on an app route)
            // is explained well enough by the server.
            ErrorCode::Forbidden if self.role == Role::Admin => {
                Some(token_help(self.token.as_ref(), self.role, false))
            }
            _ => None,
        };
        f.write_str(detail.message.trim_end())?;
        match hint {
            Some(hint) => write!(f, "\n  help: {hint}"),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The message of an answer `status` whose body is an [`ErrorBody`] of `code` and `text`.
    fn refusal(
        status: StatusCode,
        code: ErrorCode,
        text: &str,
        token: Option<TokenFrom>,
        role: Role,
    ) -> String {
        let body = serde_json::to_vec(&ErrorBody {
            error: ErrorDetail {
                code,
                message: text.into(),
            },
        })
        .unwrap();
        ApiError::new(status, &body, token, role).to_string()
    }

    #[test]
    fn a_refused_saved_token_names_the_file_and_skiff_login() {
        let saved = TokenFrom::Saved(PathBuf::from("/root/.config/skiff/config.toml"));
        let text = refusal(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized,
            "unknown token",
            Some(saved),
            Role::Tenant,
        );
        assert!(
            text.contains(
                "the token from /root/.config/skiff/config.toml (skiff login) was refused"
            ),
            "{text}"
        );
        assert!(text.contains("save it with `skiff login`"), "{text}");
    }

    #[test]
    fn error_bodies_become_their_message_verbatim() {
        let report = "error: unknown field `sorce` in [component.hello]\n --> skiff.toml:7:1\n  |";
        let (status, code) = (StatusCode::BAD_REQUEST, ErrorCode::InvalidManifest);
        let text = refusal(status, code, report, Some(TokenFrom::Flag), Role::Tenant);
        assert_eq!(text, report);
    }

    #[test]
    fn a_refused_token_names_where_it_came_from() {
        let (unauthorized, forbidden) = (StatusCode::UNAUTHORIZED, StatusCode::FORBIDDEN);
        let tenant = Some(TokenFrom::EnvToken);
        let text = refusal(
            unauthorized,
            ErrorCode::Unauthorized,
            "unknown token",
            tenant.clone(),
            Role::Tenant,
        );
        assert!(text.starts_with("unknown token\n  help: "), "{text}");
        assert!(
            text.contains("the token from SKIFF_TOKEN was refused"),
            "{text}"
        );
        assert!(text.contains("--token TOKEN or set SKIFF_TOKEN"), "{text}");

        let text = refusal(
            unauthorized,
            ErrorCode::Unauthorized,
            "needs a token",
            None,
            Role::Admin,
        );
        assert!(text.contains("no token was given"), "{text}");
        assert!(text.contains("SKIFF_ADMIN_TOKEN"), "{text}");

        let text = refusal(
            forbidden,
            ErrorCode::Forbidden,
            "admin only",
            tenant,
            Role::Admin,
        );
        let expected = "the token from SKIFF_TOKEN is a tenant's; this call needs the admin token";
        assert!(text.contains(expected), "{text}");
        assert!(text.contains("SKIFF_ADMIN_TOKEN"), "{text}");

        // A quota is a 403 too, but no token problem.
        let flag = Some(TokenFrom::Flag);
        let text = refusal(
            forbidden,
            ErrorCode::QuotaExceeded,
            "at most 1 app",
            flag,
            Role::Tenant,
        );
        assert_eq!(text, "at most 1 app");
    }

    #[test]
    fn an_untrusted_certificate_says_to_pass_the_ca_and_which_ca_was_tried() {
        // reqwest's error holds rustls's inside two io::Errors, which `source()` skips.
        let tls = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let nested =
            std::io::Error::other(std::io::Error::new(std::io::ErrorKind::InvalidData, tls));
        let found = tls_error(&nested).unwrap();
        let base = "https://h:3001";
        let text = untrusted_certificate(base, found, None).unwrap();
        assert!(
            text.starts_with(
                "the skiff server at https://h:3001 presented a certificate that is not trusted"
            ),
            "{text}"
        );
        assert!(
            text.contains("skiff login --ca-cert ca.pem") && text.contains("SKIFF_CA_CERT"),
            "{text}"
        );
        let saved = CaCert::new(
            "/home/u/ca.pem",
            CaCertFrom::Saved(PathBuf::from("/home/u/.config/skiff/config.toml")),
        );
        let text = untrusted_certificate(base, found, Some(&saved)).unwrap();
        assert!(
            text.contains("the CA in /home/u/ca.pem (from /home/u/.config/skiff/config.toml")
                && text.contains("is /home/u/ca.pem the certificate of the CA"),
            "{text}"
        );
        let wrong_name =
            rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName);
        let text = untrusted_certificate(base, &wrong_name, None).unwrap();
        assert!(
            text.contains("a name (or IP address) its certificate was made for"),
            "{text}"
        );
        assert!(untrusted_certificate(base, &rustls::Error::DecryptError, None).is_none());
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(tls_error(&refused).is_none());
    }

    #[test]
    fn an_unusable_ca_file_names_where_it_came_from_and_the_fix() {
        let text = ClientError::CaCert {
            path: PathBuf::from("/tmp/ca.pem"),
            from: CaCertFrom::Env,
            problem: "holds no certificate".into(),
        }
        .to_string();
        assert!(
            text.starts_with(
                "the CA certificate /tmp/ca.pem (from SKIFF_CA_CERT) holds no certificate;"
            ),
            "{text}"
        );
        let text = ClientError::CaCert {
            path: PathBuf::from("/tmp/ca.pem"),
            from: CaCertFrom::Saved(PathBuf::from("/c.toml")),
            problem: "cannot be read: gone".into(),
        }
        .to_string();
        assert!(
            text.contains("run `skiff login --ca-cert FILE` again"),
            "{text}"
        );
    }

    #[test]
    fn an_answer_that_is_not_an_error_body_points_at_the_server_address() {
        let body = b"<html>nope</html>";
        let error = ApiError::new(
            StatusCode::NOT_FOUND,
            body,
            Some(TokenFrom::Flag),
            Role::Tenant,
        );
        let text = error.to_string();
        assert!(text.contains("404 Not Found: <html>nope</html>"), "{text}");
        assert!(text.contains("--server"), "{text}");
    }
}
