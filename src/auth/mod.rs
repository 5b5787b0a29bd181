//! Who is calling: OAuth1 (app key) and Bearer JWT verification, pure and socket-free.
//!
//! The admin API and the forward resource hand [`AuthConfig::authenticate`] the parts of a request
//! that a signature covers ([`RequestParts`]), which schemes the resource takes ([`Accepts`],
//! LivePerson's per-resource rules) and the current time. The answer is an [`Identity`] or an
//! [`AuthError`]:
//!
//! - every [`AuthError`] is a **401**, with [`AuthError::www_authenticate`] as the
//!   `WWW-Authenticate` value;
//! - a valid identity without rights to the path's account is the caller's **403**
//!   ([`Identity::may_access`]).
//!
//! Schemes:
//! - [`oauth1`]: RFC 5849 HMAC-SHA1 / HMAC-SHA256 from the `Authorization: OAuth ...` header,
//!   app keys from config, timestamp window, nonce replay cache ([`nonce`], bounded memory);
//! - [`jwt`]: `Authorization: Bearer <JWT>`, one configured algorithm (HS256, RS256 or ES256),
//!   `iss`, `aud`, `exp`, `nbf` checked, an account claim for scope and an admin role for all
//!   accounts.
//!
//! Config is two-layered like the rest of the crate: [`AuthSettings`] mirrors the `auth:` YAML
//! section (unknown keys rejected) and [`AuthSettings::validate`] turns it into an [`AuthConfig`]
//! (secrets read, keys parsed) or one error line that names the key and the fix:
//!
//! ```yaml
//! auth:
//!   oauth1:
//!     timestamp_window_secs: 300     # default 300
//!     nonce_cache_capacity: 100000   # default 100000 entries (see nonce.rs for the bound)
//!     trust_forwarded_proto: false   # true: signatures checked against X-Forwarded-Proto
//!     keys:
//!       - key: 4a7b0c1d2e3f           # oauth_consumer_key (LivePerson "app key")
//!         secret_env: MTLS_APPKEY_SECRET   # or secret: "..." or secret_file: /run/secrets/x
//!         accounts: ["12345678"]
//!       - key: mapping-checker
//!         secret_file: /run/secrets/checker
//!         internal: true             # all accounts + the global mapping check
//!         tokens:                    # optional 3-legged token secrets
//!           - { token: kkk9d7dh3k39sjv7, secret_env: CHECKER_TOKEN_SECRET }
//!   jwt:
//!     algorithm: RS256               # HS256 | RS256 | ES256
//!     public_key_file: /etc/mtls-gateway/jwt.pub.pem   # or jwks_file; HS256: secret*
//!     issuer: https://idp.example.com
//!     audience: mtls-gateway
//!     account_claim: accountId       # default; a string or an array
//!     roles_claim: roles             # default
//!     admin_role: admin              # default
//!     leeway_secs: 30                # default
//! ```
//!
//! Nothing here logs a secret, a signature or a token, and no error message carries one; the only
//! log lines are [`follow`]'s, when a key or secret file changes (field and path).

pub(crate) mod follow;
pub mod jwt;
pub mod nonce;
pub mod oauth1;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use jwt::{JwtSettings, JwtVerifier};
pub use oauth1::{AppKeySettings, OAuth1Settings, OAuth1Verifier, TokenSettings};

/// The realm in every challenge.
pub const REALM: &str = "mtls-gateway";

/// Serde mirror of the `auth:` config section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    #[serde(default)]
    pub oauth1: OAuth1Settings,
    #[serde(default)]
    pub jwt: Option<JwtSettings>,
}

impl AuthSettings {
    /// Reads secrets and keys and checks every field; `key` is this section's path in the config
    /// file (usually `"auth"`) and prefixes every error. Relative file paths are taken as given
    /// (relative to the working directory); see [`AuthSettings::validate_in`].
    pub fn validate(self, key: &str) -> Result<AuthConfig, String> {
        self.validate_in(key, None)
    }

    /// Like [`AuthSettings::validate`], resolving relative `*_file` paths against `base_dir`
    /// (the config file's directory) when given.
    pub fn validate_in(self, key: &str, base_dir: Option<&Path>) -> Result<AuthConfig, String> {
        let oauth1 = self.oauth1.validate(&format!("{key}.oauth1"), base_dir)?;
        let jwt = match self.jwt {
            Some(jwt) => Some(jwt.validate(&format!("{key}.jwt"), base_dir)?),
            None => None,
        };
        Ok(AuthConfig { oauth1, jwt })
    }
}

/// Validated auth configuration: the verifiers, ready to use. Share it (behind an `Arc`): the
/// OAuth1 nonce cache inside must be one per process to catch replays. The default has no app
/// keys and no Bearer: every request is refused.
#[derive(Debug, Default)]
pub struct AuthConfig {
    pub oauth1: OAuth1Verifier,
    pub jwt: Option<JwtVerifier>,
}

impl AuthConfig {
    /// Verifies the request's `Authorization` header against the schemes `accepts` allows.
    /// `now` is unix seconds (the OAuth1 timestamp window, the nonce cache and JWT `exp`/`nbf`
    /// are all judged against it).
    pub fn authenticate(
        &self,
        req: &RequestParts<'_>,
        accepts: Accepts,
        now: i64,
    ) -> Result<Identity, AuthError> {
        let (identity, body_hash) = self.authenticate_deferring_body_hash(req, accepts, now)?;
        if let Some(h) = body_hash {
            h.check(req.body)?;
        }
        Ok(identity)
    }

    /// [`AuthConfig::authenticate`] from the head alone, for a caller that has not read the body
    /// yet: an OAuth1 `oauth_body_hash` is returned to be checked against the body once read
    /// (see [`OAuth1Verifier::verify_deferring_body_hash`]). A form body signed with OAuth1 is
    /// the one case that needs `req.body` here ([`oauth1_signs_form`]).
    pub fn authenticate_deferring_body_hash(
        &self,
        req: &RequestParts<'_>,
        accepts: Accepts,
        now: i64,
    ) -> Result<(Identity, Option<oauth1::BodyHash>), AuthError> {
        self.head(req, accepts, now).map(|(i, h, _)| (i, h))
    }

    /// [`AuthConfig::authenticate_deferring_body_hash`] with the OAuth1 nonce also checked
    /// fleet-wide when `redis:` is configured ([`oauth1::OAuth1Verifier::check_shared_nonce`]);
    /// the admin API's path.
    pub async fn authenticate_deferring_body_hash_shared(
        &self,
        req: &RequestParts<'_>,
        accepts: Accepts,
        now: i64,
    ) -> Result<(Identity, Option<oauth1::BodyHash>), AuthError> {
        let (identity, hash, nonce) = self.head(req, accepts, now)?;
        if let Some(n) = nonce {
            self.oauth1.check_shared_nonce(&n, now).await?;
        }
        Ok((identity, hash))
    }

    /// [`AuthConfig::authenticate`] that hands back the OAuth1 nonce it accepted locally, for
    /// the fleet-wide check ([`OAuth1Verifier::check_shared_nonce`]) the caller makes once it
    /// may await (the proxy listener decides synchronously, then checks before sending).
    pub fn authenticate_keeping_nonce(
        &self,
        req: &RequestParts<'_>,
        accepts: Accepts,
        now: i64,
    ) -> Result<(Identity, Option<oauth1::NonceUse>), AuthError> {
        let (identity, body_hash, nonce) = self.head(req, accepts, now)?;
        if let Some(h) = body_hash {
            h.check(req.body)?;
        }
        Ok((identity, nonce))
    }

    /// [`AuthConfig::authenticate`] with the fleet-wide nonce check (see
    /// [`AuthConfig::authenticate_deferring_body_hash_shared`]).
    pub async fn authenticate_shared(
        &self,
        req: &RequestParts<'_>,
        accepts: Accepts,
        now: i64,
    ) -> Result<Identity, AuthError> {
        let (identity, body_hash) = self
            .authenticate_deferring_body_hash_shared(req, accepts, now)
            .await?;
        if let Some(h) = body_hash {
            h.check(req.body)?;
        }
        Ok(identity)
    }

    #[allow(clippy::type_complexity)]
    fn head(
        &self,
        req: &RequestParts<'_>,
        accepts: Accepts,
        now: i64,
    ) -> Result<(Identity, Option<oauth1::BodyHash>, Option<oauth1::NonceUse>), AuthError> {
        let header = req
            .authorization
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .ok_or(AuthError::Missing { accepts })?;
        let (word, rest) = split_scheme(header);
        if word.eq_ignore_ascii_case("OAuth") {
            if !accepts.allows(Scheme::OAuth1) {
                return Err(AuthError::WrongScheme { accepts });
            }
            self.oauth1
                .verify_head(req, rest, now)
                .map(|(i, h, n)| (i, h, Some(n)))
        } else if word.eq_ignore_ascii_case("Bearer") {
            if !accepts.allows(Scheme::Bearer) {
                return Err(AuthError::WrongScheme { accepts });
            }
            match &self.jwt {
                Some(jwt) => jwt.verify(rest.trim(), now).map(|i| (i, None, None)),
                None => Err(AuthError::NotConfigured {
                    scheme: Scheme::Bearer,
                }),
            }
        } else {
            Err(AuthError::WrongScheme { accepts })
        }
    }
}

/// An `Authorization` value split into its scheme word and the rest (credentials).
fn split_scheme(header: &str) -> (&str, &str) {
    match header.find(|c: char| c.is_ascii_whitespace()) {
        Some(i) => (&header[..i], &header[i..]),
        None => (header, ""),
    }
}

/// Whether OAuth1 credentials in `authorization` cover the request body, so that the body must
/// be read before [`AuthConfig::authenticate`] can verify them: a form-encoded body's parameters
/// are part of the signature (RFC 5849 3.4.1.3.1), and any other body is covered by an
/// `oauth_body_hash` parameter when the client sent one (oauthlib does for every body it signs
/// that is not a form).
pub fn oauth1_covers_body(authorization: Option<&str>, content_type: Option<&str>) -> bool {
    let Some(header) = authorization.map(str::trim) else {
        return false;
    };
    let (word, rest) = split_scheme(header);
    word.eq_ignore_ascii_case("OAuth")
        && (oauth1::is_form(content_type) || rest.contains("oauth_body_hash="))
}

/// Whether `authorization` is OAuth1 over a form body, whose parameters the signature covers:
/// the one request whose credentials cannot be checked before its body is read.
pub fn oauth1_signs_form(authorization: Option<&str>, content_type: Option<&str>) -> bool {
    let Some(header) = authorization.map(str::trim) else {
        return false;
    };
    split_scheme(header).0.eq_ignore_ascii_case("OAuth") && oauth1::is_form(content_type)
}

/// The request as the signer saw it. `path` and `query` are the raw (still percent-encoded)
/// request-target parts, `query` without the `?`.
#[derive(Debug, Clone, Copy)]
pub struct RequestParts<'a> {
    pub method: &'a str,
    /// `http` or `https`, as the client used (after any TLS terminator in front of us).
    pub scheme: &'a str,
    /// The `Host` header, port included when the client sent one.
    pub host: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub authorization: Option<&'a str>,
    pub content_type: Option<&'a str>,
    pub body: &'a [u8],
    /// The first `X-Forwarded-Proto` header, as received. The signature is checked against its
    /// scheme only with `auth.oauth1.trust_forwarded_proto: true` (a TLS terminator in front of
    /// the listener); otherwise it only explains a failed signature.
    pub forwarded_proto: Option<&'a str>,
}

/// Which schemes a resource accepts (LivePerson's rules: mapping checks OAuth1 only, by-file
/// certificate operations and the P12 tester Bearer only, the rest either).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepts {
    OAuth1Only,
    BearerOnly,
    Either,
}

impl Accepts {
    pub fn allows(self, scheme: Scheme) -> bool {
        matches!(
            (self, scheme),
            (Accepts::Either, _)
                | (Accepts::OAuth1Only, Scheme::OAuth1)
                | (Accepts::BearerOnly, Scheme::Bearer)
        )
    }

    pub fn describe(self) -> &'static str {
        match self {
            Accepts::OAuth1Only => "OAuth1 (app key) only",
            Accepts::BearerOnly => "Bearer only",
            Accepts::Either => "OAuth1 (app key) or Bearer",
        }
    }

    /// The `WWW-Authenticate` challenges (comma-joined) for these schemes, without error codes.
    fn challenges(self) -> String {
        match self {
            Accepts::OAuth1Only => Scheme::OAuth1.challenge(),
            Accepts::BearerOnly => Scheme::Bearer.challenge(),
            Accepts::Either => format!(
                "{}, {}",
                Scheme::OAuth1.challenge(),
                Scheme::Bearer.challenge()
            ),
        }
    }
}

/// An authentication scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    OAuth1,
    Bearer,
}

impl Scheme {
    fn challenge(self) -> String {
        match self {
            Scheme::OAuth1 => format!("OAuth realm=\"{REALM}\""),
            Scheme::Bearer => format!("Bearer realm=\"{REALM}\""),
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scheme::OAuth1 => "OAuth1",
            Scheme::Bearer => "Bearer",
        })
    }
}

/// Who is calling, after verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub kind: IdentityKind,
    /// The app key (`oauth_consumer_key`) or the token's `sub`: what audit lines name.
    pub subject: String,
    pub accounts: AccountScope,
    /// An internal app key: may call the global mapping check (`/mtls/mapping`). Always false
    /// for Bearer tokens (an admin token has [`AccountScope::All`] but is not internal).
    pub internal: bool,
}

impl Identity {
    /// Whether this identity may act on `account` (false means 403 for the caller).
    pub fn may_access(&self, account: &str) -> bool {
        match &self.accounts {
            AccountScope::All => true,
            AccountScope::Only(list) => list.iter().any(|a| a == account),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityKind {
    AppKey,
    Bearer,
}

/// The accounts an identity may act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountScope {
    /// Internal app keys and tokens with the admin role.
    All,
    /// Possibly empty (a valid token without an account claim gets 403 everywhere).
    Only(Vec<String>),
}

/// Why a request is not authenticated. Always 401; [`AuthError::www_authenticate`] gives the
/// header value. Messages name parameters and claims, never their secret values, signatures or
/// tokens.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no credentials; this resource accepts {}", .accepts.describe())]
    Missing { accepts: Accepts },
    #[error("wrong authorization scheme; this resource accepts {}", .accepts.describe())]
    WrongScheme { accepts: Accepts },
    #[error("{scheme} authentication is not configured on this gateway")]
    NotConfigured { scheme: Scheme },
    #[error("malformed {scheme} credentials: {reason}")]
    Malformed { scheme: Scheme, reason: String },
    #[error("unsupported oauth_signature_method; use HMAC-SHA1 or HMAC-SHA256")]
    UnsupportedMethod,
    /// `hint` is empty or starts with `; ` and says what to change (never a secret).
    #[error("{scheme} signature does not verify{hint}")]
    BadSignature { scheme: Scheme, hint: &'static str },
    #[error("{}", match .scheme {
        Scheme::OAuth1 => "oauth_timestamp is outside the accepted window; check the client clock",
        Scheme::Bearer => "token expired",
    })]
    Expired { scheme: Scheme },
    #[error("token is not valid yet (nbf)")]
    NotYetValid,
    #[error("oauth_nonce was already used with this timestamp (replay)")]
    Replay,
    #[error("{}", match .scheme {
        Scheme::OAuth1 => "unknown oauth_consumer_key",
        Scheme::Bearer => "token kid is not in the configured key set",
    })]
    UnknownKey { scheme: Scheme },
    #[error("token claim {claim} is missing or not accepted")]
    InvalidClaim { claim: String },
}

impl AuthError {
    /// The scheme whose credentials failed, when one was presented.
    pub fn scheme(&self) -> Option<Scheme> {
        match self {
            AuthError::Missing { .. } | AuthError::WrongScheme { .. } => None,
            AuthError::NotConfigured { scheme }
            | AuthError::Malformed { scheme, .. }
            | AuthError::BadSignature { scheme, .. }
            | AuthError::Expired { scheme }
            | AuthError::UnknownKey { scheme } => Some(*scheme),
            AuthError::UnsupportedMethod | AuthError::Replay => Some(Scheme::OAuth1),
            AuthError::NotYetValid | AuthError::InvalidClaim { .. } => Some(Scheme::Bearer),
        }
    }

    /// The HTTP status: always 401 (403 is the caller's, from [`Identity::may_access`]).
    pub fn status(&self) -> u16 {
        401
    }

    /// The `WWW-Authenticate` value: the accepted schemes' challenges when no usable credentials
    /// came; `OAuth realm=..., oauth_problem=...` (the OAuth Problem Reporting names) for OAuth1
    /// failures; `Bearer realm=..., error="invalid_token", error_description=...` (RFC 6750) for
    /// Bearer failures.
    pub fn www_authenticate(&self) -> String {
        match self {
            AuthError::Missing { accepts } | AuthError::WrongScheme { accepts } => {
                accepts.challenges()
            }
            AuthError::NotConfigured { scheme } => scheme.challenge(),
            _ => match self.scheme() {
                Some(Scheme::OAuth1) => format!(
                    "{}, oauth_problem=\"{}\"",
                    Scheme::OAuth1.challenge(),
                    self.oauth_problem()
                ),
                _ => {
                    let code = match self {
                        AuthError::Malformed { .. } => "invalid_request",
                        _ => "invalid_token",
                    };
                    format!(
                        "{}, error=\"{code}\", error_description=\"{}\"",
                        Scheme::Bearer.challenge(),
                        header_safe(&self.to_string())
                    )
                }
            },
        }
    }

    /// The `oauth_problem` value (OAuth Problem Reporting extension) for OAuth1 failures.
    fn oauth_problem(&self) -> &'static str {
        match self {
            AuthError::UnsupportedMethod => "signature_method_rejected",
            AuthError::BadSignature { .. } => "signature_invalid",
            AuthError::Expired { .. } => "timestamp_refused",
            AuthError::Replay => "nonce_used",
            AuthError::UnknownKey { .. } => "consumer_key_unknown",
            _ => "parameter_rejected",
        }
    }
}

/// Keeps only the characters RFC 6750 allows inside `error_description`.
fn header_safe(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            ' ' | '!' | '#'..='[' | ']'..='~' => c,
            _ => '\'',
        })
        .collect()
}

/// A secret as config gives it; `Debug` never shows it.
#[derive(Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct SecretString(pub String);

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

/// Secret bytes; `Debug` never shows them.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Secret(bytes.into())
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

/// [`load_secret`], with a `secret_file` followed for changes (see [`follow`]); a secret given
/// inline or by environment variable is fixed. `check` runs on every value read (e.g. a minimum
/// length) and its error fails the config at start, or keeps the last good value later.
pub(crate) fn load_secret_followed<T: 'static>(
    path: &str,
    secret: Option<&SecretString>,
    secret_env: Option<&str>,
    secret_file: Option<&Path>,
    base_dir: Option<&Path>,
    check: impl Fn(&str, Secret) -> Result<T, String> + Send + Sync + 'static,
) -> Result<follow::Followed<T>, String> {
    match (secret, secret_env, secret_file) {
        (None, None, Some(file)) => {
            let at = path.to_string();
            let file = resolve(file, base_dir);
            let f = file.clone();
            follow::Followed::file(
                format!("{path}.secret_file"),
                file,
                Box::new(move || check(&at, load_secret(&at, None, None, Some(&f), None)?)),
            )
        }
        _ => Ok(follow::Followed::fixed(check(
            path,
            load_secret(path, secret, secret_env, secret_file, base_dir)?,
        )?)),
    }
}

/// Reads exactly one of `secret` / `secret_env` / `secret_file` (a file loses one trailing
/// newline). `path` names the config object in errors, e.g. `auth.oauth1.keys[0]`.
pub(crate) fn load_secret(
    path: &str,
    secret: Option<&SecretString>,
    secret_env: Option<&str>,
    secret_file: Option<&Path>,
    base_dir: Option<&Path>,
) -> Result<Secret, String> {
    let bytes = match (secret, secret_env, secret_file) {
        (None, None, None) => {
            return Err(format!(
                "{path}: no secret; set one of secret, secret_env or secret_file"
            ))
        }
        (Some(s), None, None) => s.0.clone().into_bytes(),
        (None, Some(var), None) => match std::env::var(var) {
            Ok(v) => v.into_bytes(),
            Err(std::env::VarError::NotPresent) => {
                return Err(format!(
                    "{path}.secret_env: environment variable {var} is not set; export it or use secret_file"
                ))
            }
            Err(std::env::VarError::NotUnicode(_)) => {
                return Err(format!(
                    "{path}.secret_env: environment variable {var} is not valid UTF-8"
                ))
            }
        },
        (None, None, Some(file)) => {
            let file = resolve(file, base_dir);
            let mut bytes = std::fs::read(&file).map_err(|e| {
                format!(
                    "{path}.secret_file: cannot read {}: {e}; check the path and its permissions",
                    file.display()
                )
            })?;
            if bytes.last() == Some(&b'\n') {
                bytes.pop();
                if bytes.last() == Some(&b'\r') {
                    bytes.pop();
                }
            }
            bytes
        }
        _ => {
            return Err(format!(
                "{path}: more than one of secret, secret_env and secret_file; keep only one"
            ))
        }
    };
    if bytes.is_empty() {
        return Err(format!(
            "{path}: the secret is empty; set a non-empty secret"
        ));
    }
    Ok(Secret(bytes))
}

/// `file` relative to `base_dir` when it is relative and a base is given.
pub(crate) fn resolve(file: &Path, base_dir: Option<&Path>) -> PathBuf {
    match base_dir {
        Some(base) if file.is_relative() => base.join(file),
        _ => file.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oauth1_covers_a_form_body_and_a_body_hash_only() {
        const FORM: &str = "application/x-www-form-urlencoded";
        let oauth = Some("OAuth oauth_consumer_key=\"k\", oauth_signature=\"s\"");
        let hashed =
            Some("oauth oauth_body_hash=\"2jmj7l5rSw0yVb/vlWAYkK/YBwk=\", oauth_signature=\"s\"");
        assert!(oauth1_covers_body(oauth, Some(FORM)));
        assert!(oauth1_covers_body(
            oauth,
            Some("Application/X-WWW-Form-Urlencoded; charset=utf-8")
        ));
        assert!(
            !oauth1_covers_body(oauth, Some("application/json")),
            "no body hash"
        );
        assert!(!oauth1_covers_body(oauth, None));
        assert!(oauth1_covers_body(hashed, Some("application/json")));
        assert!(!oauth1_covers_body(Some("Bearer eyJ.x.y"), Some(FORM)));
        assert!(!oauth1_covers_body(None, Some(FORM)));
        assert!(
            !oauth1_covers_body(Some("OAut"), Some(FORM)),
            "short values do not panic"
        );
        // Only a signed form needs its body before the caller can be verified.
        assert!(oauth1_signs_form(oauth, Some(FORM)));
        assert!(!oauth1_signs_form(hashed, Some("application/json")));
        assert!(!oauth1_signs_form(Some("Bearer eyJ.x.y"), Some(FORM)));
        assert!(!oauth1_signs_form(None, Some(FORM)));
        assert!(!oauth1_signs_form(Some("OAut"), Some(FORM)));
    }

    #[test]
    fn challenges_follow_accepted_schemes() {
        let e = AuthError::Missing {
            accepts: Accepts::Either,
        };
        assert_eq!(
            e.www_authenticate(),
            "OAuth realm=\"mtls-gateway\", Bearer realm=\"mtls-gateway\""
        );
        let e = AuthError::WrongScheme {
            accepts: Accepts::BearerOnly,
        };
        assert_eq!(e.www_authenticate(), "Bearer realm=\"mtls-gateway\"");
    }

    #[test]
    fn bearer_failure_carries_rfc6750_error() {
        let e = AuthError::Expired {
            scheme: Scheme::Bearer,
        };
        assert_eq!(
            e.www_authenticate(),
            "Bearer realm=\"mtls-gateway\", error=\"invalid_token\", error_description=\"token expired\""
        );
    }

    #[test]
    fn oauth_failure_carries_oauth_problem() {
        assert_eq!(
            AuthError::Replay.www_authenticate(),
            "OAuth realm=\"mtls-gateway\", oauth_problem=\"nonce_used\""
        );
    }

    #[test]
    fn header_safe_drops_quotes_and_backslashes() {
        assert_eq!(header_safe("a\"b\\c\nd"), "a'b'c'd");
    }

    /// The YAML in this module's doc parses (so the documented shape stays true).
    #[test]
    fn documented_yaml_example_parses() {
        let src = include_str!("mod.rs");
        let yaml: String = src
            .lines()
            .skip_while(|l| !l.starts_with("//! ```yaml"))
            .skip(1)
            .take_while(|l| !l.starts_with("//! ```"))
            .map(|l| {
                format!(
                    "{}\n",
                    l.strip_prefix("//!")
                        .unwrap_or(l)
                        .strip_prefix(' ')
                        .unwrap_or("")
                )
            })
            .collect();
        #[derive(Deserialize)]
        struct Doc {
            auth: AuthSettings,
        }
        let doc: Doc = serde_yaml::from_str(&yaml).expect("doc example parses");
        assert_eq!(doc.auth.oauth1.keys.len(), 2);
        assert_eq!(doc.auth.oauth1.keys[1].tokens.len(), 1);
        assert_eq!(doc.auth.jwt.map(|j| j.algorithm), Some("RS256".to_string()));
    }

    #[test]
    fn may_access_follows_scope() {
        let id = Identity {
            kind: IdentityKind::AppKey,
            subject: "k".into(),
            accounts: AccountScope::Only(vec!["1".into()]),
            internal: false,
        };
        assert!(id.may_access("1"));
        assert!(!id.may_access("2"));
    }
}
