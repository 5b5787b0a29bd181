//! Bearer JWT verification with `jsonwebtoken`.
//!
//! One algorithm is configured (HS256, RS256 or ES256) and only tokens whose header names it are
//! looked at: `alg: none` and algorithm confusion (an HS256 token "signed" with the RSA public key
//! as HMAC secret when RS256 is configured) fail before any key is used. Keys: an HS256 secret
//! (`secret`, `secret_env` or `secret_file`, at least 32 bytes), a PEM public key or certificate
//! (`public_key_file`; RSA of at least 2048 bits, or EC P-256 for ES256), or a JWKS file
//! (`jwks_file`; keys picked by `kid`, only keys of the configured algorithm are used).
//!
//! Claims: `exp` (required), `nbf` (when present), both with `leeway_secs` and judged against the
//! caller's `now`; `iss` and `aud` must equal the configured values; `sub` (required) names the
//! caller. The account claim (default `accountId`; a string, a number or an array of them) gives
//! the scope, and a token whose roles claim (default `roles`; an array or a space-separated
//! string) contains the admin role (default `admin`) may act on every account. A claim name is
//! looked up as a top-level key first, then as a dotted path (`realm_access.roles`).
//!
//! Key files (`jwks_file`, `public_key_file`, `secret_file`) are followed without a restart
//! ([`super::follow`]): a rotated key is accepted and a removed one refused from the next request
//! on; a file that no longer loads keeps the keys read before, with a warning naming the field.

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;

use super::follow::Followed;
use super::{
    load_secret_followed, resolve, AccountScope, AuthError, Identity, IdentityKind, Scheme,
    SecretString,
};

/// Longest bearer token looked at, bytes.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;
/// Shortest HS256 secret accepted (RFC 7518 section 3.2: at least the hash size).
pub const MIN_HS256_SECRET: usize = 32;

/// Serde mirror of `auth.jwt`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtSettings {
    /// HS256, RS256 or ES256.
    pub algorithm: String,
    pub secret: Option<SecretString>,
    pub secret_env: Option<String>,
    pub secret_file: Option<PathBuf>,
    pub public_key_file: Option<PathBuf>,
    pub jwks_file: Option<PathBuf>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    #[serde(default = "default_account_claim")]
    pub account_claim: String,
    #[serde(default = "default_admin_role")]
    pub admin_role: String,
    #[serde(default = "default_roles_claim")]
    pub roles_claim: String,
    #[serde(default = "default_leeway")]
    pub leeway_secs: u64,
}

fn default_account_claim() -> String {
    "accountId".into()
}
fn default_admin_role() -> String {
    "admin".into()
}
fn default_roles_claim() -> String {
    "roles".into()
}
fn default_leeway() -> u64 {
    30
}

impl JwtSettings {
    /// The minimal settings for `algorithm` with every default; keys and issuer still to set.
    pub fn new(algorithm: &str) -> Self {
        JwtSettings {
            algorithm: algorithm.into(),
            secret: None,
            secret_env: None,
            secret_file: None,
            public_key_file: None,
            jwks_file: None,
            issuer: None,
            audience: None,
            account_claim: default_account_claim(),
            admin_role: default_admin_role(),
            roles_claim: default_roles_claim(),
            leeway_secs: default_leeway(),
        }
    }

    pub(crate) fn validate(
        self,
        path: &str,
        base_dir: Option<&Path>,
    ) -> Result<JwtVerifier, String> {
        let algorithm = match self.algorithm.as_str() {
            "HS256" => Algorithm::HS256,
            "RS256" => Algorithm::RS256,
            "ES256" => Algorithm::ES256,
            other if other.eq_ignore_ascii_case("none") => {
                return Err(format!(
                    "{path}.algorithm: \"none\" is not allowed; use HS256, RS256 or ES256"
                ))
            }
            other => {
                return Err(format!(
                    "{path}.algorithm: {other:?} is not supported; use HS256, RS256 or ES256"
                ))
            }
        };
        let issuer = required_text(
            path,
            "issuer",
            self.issuer,
            "the `iss` your token issuer writes",
        )?;
        let audience = required_text(
            path,
            "audience",
            self.audience,
            "the `aud` your tokens carry for this gateway",
        )?;
        for (name, value) in [
            ("account_claim", &self.account_claim),
            ("roles_claim", &self.roles_claim),
            ("admin_role", &self.admin_role),
        ] {
            if value.trim().is_empty() {
                return Err(format!(
                    "{path}.{name}: empty; remove it to use the default"
                ));
            }
        }
        if self.leeway_secs > 600 {
            return Err(format!(
                "{path}.leeway_secs: {} is too large; use at most 600 (default 30)",
                self.leeway_secs
            ));
        }

        let has_secret =
            self.secret.is_some() || self.secret_env.is_some() || self.secret_file.is_some();
        let keys = match (algorithm, &self.public_key_file, &self.jwks_file) {
            (_, Some(_), Some(_)) => {
                return Err(format!(
                    "{path}: both public_key_file and jwks_file are set; keep one"
                ))
            }
            (_, _, Some(jwks)) => {
                if has_secret {
                    return Err(format!(
                        "{path}: jwks_file and a secret are both set; keep one"
                    ));
                }
                let file = resolve(jwks, base_dir);
                let at = path.to_string();
                Followed::file(
                    format!("{path}.jwks_file"),
                    file.clone(),
                    Box::new(move || load_jwks(&at, &file, algorithm)),
                )?
            }
            (Algorithm::HS256, Some(_), None) => {
                return Err(format!(
                    "{path}.public_key_file: not used with HS256; set secret, secret_env or secret_file (or use RS256/ES256)"
                ))
            }
            (Algorithm::HS256, None, None) => load_secret_followed(
                path,
                self.secret.as_ref(),
                self.secret_env.as_deref(),
                self.secret_file.as_deref(),
                base_dir,
                |at, secret| {
                    if secret.expose().len() < MIN_HS256_SECRET {
                        return Err(format!(
                            "{at}: the HS256 secret is {} bytes; use at least {MIN_HS256_SECRET} random bytes",
                            secret.expose().len()
                        ));
                    }
                    Ok(vec![(None, DecodingKey::from_secret(secret.expose()))])
                },
            )?,
            (_, _, _) if has_secret => {
                return Err(format!(
                    "{path}: secret, secret_env and secret_file are for HS256 only; remove them and set public_key_file or jwks_file for {}",
                    self.algorithm
                ))
            }
            (_, Some(pem), None) => {
                let file = resolve(pem, base_dir);
                let at = path.to_string();
                Followed::file(
                    format!("{path}.public_key_file"),
                    file.clone(),
                    Box::new(move || Ok(vec![(None, load_public_pem(&at, &file, algorithm)?)])),
                )?
            }
            (_, None, None) => {
                return Err(format!(
                    "{path}: no verification key; set public_key_file (PEM) or jwks_file for {}",
                    self.algorithm
                ))
            }
        };

        let mut validation = Validation::new(algorithm);
        // exp and nbf are judged here against the caller's clock (`now`), not the system's.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.validate_aud = true;

        Ok(JwtVerifier {
            algorithm,
            keys,
            validation,
            account_claim: self.account_claim,
            roles_claim: self.roles_claim,
            admin_role: self.admin_role,
            leeway: i64::try_from(self.leeway_secs).unwrap_or(600),
        })
    }
}

fn required_text(path: &str, name: &str, v: Option<String>, what: &str) -> Result<String, String> {
    match v {
        Some(v) if !v.trim().is_empty() => Ok(v),
        _ => Err(format!("{path}.{name}: missing; set it to {what}")),
    }
}

/// Reads a PEM public key (SPKI or PKCS#1 RSA) or certificate, checks its type and strength,
/// and converts it for `jsonwebtoken`.
fn load_public_pem(path: &str, file: &Path, algorithm: Algorithm) -> Result<DecodingKey, String> {
    use boring::pkey::{Id, PKey};
    let at = format!("{path}.public_key_file");
    let bytes = std::fs::read(file).map_err(|e| {
        format!(
            "{at}: cannot read {}: {e}; check the path and its permissions",
            file.display()
        )
    })?;
    let key = PKey::public_key_from_pem(&bytes)
        .or_else(|_| boring::rsa::Rsa::public_key_from_pem_pkcs1(&bytes).and_then(PKey::from_rsa))
        .or_else(|_| boring::x509::X509::from_pem(&bytes).and_then(|c| c.public_key()))
        .map_err(|_| {
            format!(
                "{at}: {} holds no PEM public key or certificate",
                file.display()
            )
        })?;
    let spki = key.public_key_to_pem().map_err(|_| {
        format!(
            "{at}: cannot re-encode the public key in {}",
            file.display()
        )
    })?;
    match algorithm {
        Algorithm::RS256 => {
            let rsa = key
                .rsa()
                .ok()
                .filter(|_| key.id() == Id::RSA)
                .ok_or_else(|| format!("{at}: not an RSA key; RS256 needs one (or set algorithm: ES256 for an EC key)"))?;
            if rsa.size() * 8 < 2048 {
                return Err(format!(
                    "{at}: RSA key of {} bits is too weak; use at least 2048 bits",
                    rsa.size() * 8
                ));
            }
            DecodingKey::from_rsa_pem(&spki).map_err(|e| format!("{at}: {e}"))
        }
        Algorithm::ES256 => {
            let ec = key
                .ec_key()
                .ok()
                .filter(|_| key.id() == Id::EC)
                .ok_or_else(|| format!("{at}: not an EC key; ES256 needs a P-256 key"))?;
            if ec.group().curve_name() != Some(boring::nid::Nid::X9_62_PRIME256V1) {
                return Err(format!(
                    "{at}: the EC key is not on P-256; ES256 needs P-256"
                ));
            }
            DecodingKey::from_ec_pem(&spki).map_err(|e| format!("{at}: {e}"))
        }
        _ => Err(format!("{at}: not used with {algorithm:?}")),
    }
}

/// Reads a JWKS and keeps the keys usable with `algorithm` (key type, curve, `alg` and `use`
/// agree). At least one must remain; `kid`s must be unique.
fn load_jwks(
    path: &str,
    file: &Path,
    algorithm: Algorithm,
) -> Result<Vec<(Option<String>, DecodingKey)>, String> {
    let at = format!("{path}.jwks_file");
    let bytes = std::fs::read(file).map_err(|e| {
        format!(
            "{at}: cannot read {}: {e}; check the path and its permissions",
            file.display()
        )
    })?;
    let set: JwkSet = serde_json::from_slice(&bytes)
        .map_err(|e| format!("{at}: {} is not a JWK set: {e}", file.display()))?;
    let wanted_alg = match algorithm {
        Algorithm::HS256 => KeyAlgorithm::HS256,
        Algorithm::RS256 => KeyAlgorithm::RS256,
        _ => KeyAlgorithm::ES256,
    };
    let mut keys: Vec<(Option<String>, DecodingKey)> = Vec::new();
    for jwk in &set.keys {
        if jwk.common.key_algorithm.is_some_and(|a| a != wanted_alg) {
            continue;
        }
        if jwk
            .common
            .public_key_use
            .as_ref()
            .is_some_and(|u| *u != PublicKeyUse::Signature)
        {
            continue;
        }
        let usable = match (&jwk.algorithm, algorithm) {
            (AlgorithmParameters::RSA(p), Algorithm::RS256) => {
                let n = B64URL.decode(&p.n).unwrap_or_default();
                n.iter().skip_while(|b| **b == 0).count() * 8 >= 2048
            }
            (AlgorithmParameters::EllipticCurve(p), Algorithm::ES256) => {
                p.curve == EllipticCurve::P256
            }
            (AlgorithmParameters::OctetKey(p), Algorithm::HS256) => {
                B64URL.decode(&p.value).map_or(0, |v| v.len()) >= MIN_HS256_SECRET
            }
            _ => false,
        };
        if !usable {
            continue;
        }
        let kid = jwk.common.key_id.clone();
        if kid.is_some() && keys.iter().any(|(k, _)| *k == kid) {
            return Err(format!(
                "{at}: kid {:?} appears twice; kids must be unique",
                kid.unwrap_or_default()
            ));
        }
        let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("{at}: bad key: {e}"))?;
        keys.push((kid, key));
    }
    if keys.is_empty() {
        return Err(format!(
            "{at}: {} has no key usable with {algorithm:?} (right kty/crv, alg and use, RSA >= 2048 bits, HMAC >= {MIN_HS256_SECRET} bytes)",
            file.display()
        ));
    }
    Ok(keys)
}

/// `(kid, key)`; one entry without kid for a secret or PEM key.
type Keys = Vec<(Option<String>, DecodingKey)>;

/// Verifies bearer tokens.
pub struct JwtVerifier {
    algorithm: Algorithm,
    keys: Followed<Keys>,
    validation: Validation,
    account_claim: String,
    roles_claim: String,
    admin_role: String,
    leeway: i64,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("algorithm", &self.algorithm)
            .field("keys", &self.keys)
            .field("issuer", &self.validation.iss)
            .field("audience", &self.validation.aud)
            .field("account_claim", &self.account_claim)
            .field("roles_claim", &self.roles_claim)
            .field("admin_role", &self.admin_role)
            .field("leeway", &self.leeway)
            .finish()
    }
}

fn malformed(reason: impl Into<String>) -> AuthError {
    AuthError::Malformed {
        scheme: Scheme::Bearer,
        reason: reason.into(),
    }
}

const BAD_SIGNATURE: AuthError = AuthError::BadSignature {
    scheme: Scheme::Bearer,
    hint: "",
};

#[derive(Deserialize)]
struct HeaderPeek {
    alg: Option<String>,
    kid: Option<String>,
}

impl JwtVerifier {
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Verifies `token` (the part after `Bearer `) at unix time `now`.
    pub fn verify(&self, token: &str, now: i64) -> Result<Identity, AuthError> {
        if token.is_empty() {
            return Err(malformed("no token after Bearer"));
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(malformed(format!(
                "token is longer than {MAX_TOKEN_LEN} bytes"
            )));
        }
        let mut segments = token.split('.');
        let (Some(head), Some(_), Some(_), None) = (
            segments.next(),
            segments.next(),
            segments.next(),
            segments.next(),
        ) else {
            return Err(malformed("not a JWT (three dot-separated parts)"));
        };
        let peek: HeaderPeek = B64URL
            .decode(head)
            .ok()
            .and_then(|h| serde_json::from_slice(&h).ok())
            .ok_or_else(|| malformed("token header is not base64url JSON"))?;
        let alg = peek.alg.unwrap_or_default();
        if alg.eq_ignore_ascii_case("none") {
            return Err(malformed("alg \"none\" is not accepted"));
        }
        if alg != format!("{:?}", self.algorithm) {
            return Err(malformed(format!(
                "token alg is not {:?}, the only algorithm accepted",
                self.algorithm
            )));
        }

        let keys = self.keys.current();
        let key = match (&peek.kid, keys.as_slice()) {
            (_, [(None, key)]) => key,
            (Some(kid), keys) => keys
                .iter()
                .find(|(k, _)| k.as_deref() == Some(kid.as_str()))
                .map(|(_, key)| key)
                .ok_or(AuthError::UnknownKey {
                    scheme: Scheme::Bearer,
                })?,
            (None, [(_, key)]) => key,
            (None, _) => {
                return Err(malformed(
                    "token has no kid and the key set holds several keys",
                ))
            }
        };

        let data =
            jsonwebtoken::decode::<serde_json::Map<String, Value>>(token, key, &self.validation)
                .map_err(|e| match e.kind() {
                    ErrorKind::InvalidSignature
                    | ErrorKind::InvalidAlgorithm
                    | ErrorKind::InvalidKeyFormat
                    | ErrorKind::InvalidRsaKey(_)
                    | ErrorKind::InvalidEcdsaKey => BAD_SIGNATURE,
                    ErrorKind::InvalidIssuer => AuthError::InvalidClaim {
                        claim: "iss".into(),
                    },
                    ErrorKind::InvalidAudience => AuthError::InvalidClaim {
                        claim: "aud".into(),
                    },
                    ErrorKind::MissingRequiredClaim(c) | ErrorKind::InvalidClaimFormat(c) => {
                        AuthError::InvalidClaim {
                            claim: claim_name(c),
                        }
                    }
                    ErrorKind::ExpiredSignature => AuthError::Expired {
                        scheme: Scheme::Bearer,
                    },
                    ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                    _ => malformed("not a well-formed JWT"),
                })?;
        let claims = data.claims;

        let exp = numeric(claims.get("exp")).ok_or_else(|| AuthError::InvalidClaim {
            claim: "exp".into(),
        })?;
        if exp.saturating_add(self.leeway) < now {
            return Err(AuthError::Expired {
                scheme: Scheme::Bearer,
            });
        }
        match claims.get("nbf") {
            None | Some(Value::Null) => {}
            Some(v) => {
                let nbf = numeric(Some(v)).ok_or_else(|| AuthError::InvalidClaim {
                    claim: "nbf".into(),
                })?;
                if nbf.saturating_sub(self.leeway) > now {
                    return Err(AuthError::NotYetValid);
                }
            }
        }
        let subject = match claims.get("sub") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => {
                return Err(AuthError::InvalidClaim {
                    claim: "sub".into(),
                })
            }
        };

        let roles = strings(lookup(&claims, &self.roles_claim), true).ok_or_else(|| {
            AuthError::InvalidClaim {
                claim: claim_name(&self.roles_claim),
            }
        })?;
        let accounts = if roles.contains(&self.admin_role) {
            AccountScope::All
        } else {
            AccountScope::Only(
                strings(lookup(&claims, &self.account_claim), false).ok_or_else(|| {
                    AuthError::InvalidClaim {
                        claim: claim_name(&self.account_claim),
                    }
                })?,
            )
        };
        Ok(Identity {
            kind: IdentityKind::Bearer,
            subject,
            accounts,
            internal: false,
        })
    }
}

/// A claim name safe to echo (configured names are, token-chosen ones are not used here).
fn claim_name(c: &str) -> String {
    c.chars()
        .filter(|c| c.is_ascii_alphanumeric() || "_-.:/".contains(*c))
        .take(64)
        .collect()
}

/// `name` as a top-level claim, else as a dotted path into nested objects.
fn lookup<'a>(claims: &'a serde_json::Map<String, Value>, name: &str) -> Option<&'a Value> {
    if let Some(v) = claims.get(name) {
        return Some(v);
    }
    let mut parts = name.split('.');
    let mut cur = claims.get(parts.next()?)?;
    for p in parts {
        cur = cur.as_object()?.get(p)?;
    }
    Some(cur)
}

/// A string, a number or an array of them; `split_spaces` also splits a string on whitespace
/// (OAuth `scope` style). Absent or null is empty; anything else is `None` (malformed).
fn strings(v: Option<&Value>, split_spaces: bool) -> Option<Vec<String>> {
    fn one(v: &Value) -> Option<String> {
        match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }
    match v {
        None | Some(Value::Null) => Some(Vec::new()),
        Some(Value::String(s)) if split_spaces => {
            Some(s.split_ascii_whitespace().map(String::from).collect())
        }
        Some(Value::Array(items)) => items.iter().map(one).collect(),
        Some(other) => one(other).map(|s| vec![s]),
    }
}

/// A NumericDate (integer or fractional seconds) as whole seconds.
fn numeric(v: Option<&Value>) -> Option<i64> {
    let n = v?.as_number()?;
    if let Some(i) = n.as_i64() {
        return Some(i);
    }
    let f = n.as_f64()?;
    (f.is_finite() && f.abs() < 1e15).then(|| f.floor() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_dates_accept_integers_and_fractions() {
        assert_eq!(numeric(Some(&serde_json::json!(10))), Some(10));
        assert_eq!(numeric(Some(&serde_json::json!(10.7))), Some(10));
        assert_eq!(numeric(Some(&serde_json::json!("10"))), None);
    }

    #[test]
    fn account_claim_forms() {
        assert_eq!(
            strings(Some(&serde_json::json!("123")), false),
            Some(vec!["123".to_string()])
        );
        assert_eq!(
            strings(Some(&serde_json::json!([123, "456"])), false),
            Some(vec!["123".to_string(), "456".to_string()])
        );
        assert_eq!(strings(Some(&serde_json::json!({"a": 1})), false), None);
        assert_eq!(
            strings(Some(&serde_json::json!("a admin")), true),
            Some(vec!["a".to_string(), "admin".to_string()])
        );
    }

    #[test]
    fn dotted_claim_path() {
        let claims = serde_json::json!({"realm_access": {"roles": ["admin"]}, "a.b": 1});
        let map = claims.as_object().expect("object");
        assert_eq!(
            lookup(map, "realm_access.roles"),
            Some(&serde_json::json!(["admin"]))
        );
        assert_eq!(lookup(map, "a.b"), Some(&serde_json::json!(1)));
    }
}
