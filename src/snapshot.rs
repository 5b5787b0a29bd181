//! The immutable runtime snapshot: every mapping, indexed for lookup, and one ready
//! `Arc<CertKey>` per certificate. Built by [`crate::refresh`], published through `ArcSwap`, read by
//! the proxy without locks. Nothing here touches the store or parses a certificate on the request
//! path.
//!
//! Matching rules (LivePerson's, plus a wildcard form):
//! - a mapping is (accountId, serviceName, url) -> certificateId, used only when `enabled`;
//! - URLs are normalised with [`normalize_url`]: scheme and host lower-cased, default port dropped,
//!   an empty path becomes `/`, the fragment is dropped; path and query are kept byte for byte;
//! - exact match on the whole normalised URL, query included;
//! - a mapping URL ending in `*` matches every URL that begins with what comes before the `*`
//!   (normalised the same way); exact beats wildcard, the longest wildcard wins.
//!
//! Lookup cost: two hash-map probes to reach the (account, service) table, one probe for the exact
//! URL, then one probe per distinct wildcard prefix length in that table (longest first). It never
//! scans the mappings.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use pingora::utils::tls::CertKey;

use crate::store::{Mapping, MappingDocument};

/// A certificate decoded and ready to present.
pub struct LoadedCert {
    pub account: String,
    pub id: u64,
    pub name: String,
    /// Store version it was decoded from.
    pub version: String,
    pub cert_key: Arc<CertKey>,
    /// SHA-256 of the leaf DER: the identity the upstream connection pool is keyed on.
    pub leaf_sha256: [u8; 32],
    pub subject: String,
    pub serial_hex: String,
    pub not_before: i64,
    pub not_after: i64,
    /// The entry's lifecycle (PKI source, renewal and notification bookkeeping) as read with
    /// this version: what the renewal and notification tasks decide from.
    pub lifecycle: Option<Arc<crate::store::Lifecycle>>,
}

impl std::fmt::Debug for LoadedCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedCert")
            .field("account", &self.account)
            .field("id", &self.id)
            .field("name", &self.name)
            .field("subject", &self.subject)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl LoadedCert {
    /// The pool key part for this identity (first 8 bytes of the leaf digest).
    pub fn identity_key(&self) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.leaf_sha256[..8]);
        u64::from_le_bytes(b)
    }
}

/// State of one certificate entry of the store in this snapshot.
#[derive(Debug, Clone)]
pub enum CertEntry {
    /// Decoded and usable (possibly an older version when the newest failed: see `stale`).
    Ready {
        cert: Arc<LoadedCert>,
        /// Store version that failed to load, when `cert` is the last good older version.
        stale: Option<(String, String)>,
    },
    /// Never loaded successfully: (version, reason). Mappings to it are refused.
    Failed { version: String, reason: String },
}

impl CertEntry {
    pub fn cert(&self) -> Option<&Arc<LoadedCert>> {
        match self {
            CertEntry::Ready { cert, .. } => Some(cert),
            CertEntry::Failed { .. } => None,
        }
    }

    /// The version this entry stands for in the store (the newest version seen).
    pub fn seen_version(&self) -> &str {
        match self {
            CertEntry::Ready {
                stale: Some((v, _)),
                ..
            } => v,
            CertEntry::Ready { cert, .. } => &cert.version,
            CertEntry::Failed { version, .. } => version,
        }
    }
}

/// What a matched mapping leads to.
#[derive(Debug)]
pub struct Target {
    pub mapping_id: u64,
    pub mapping_name: String,
    pub account: String,
    pub service: String,
    pub certificate_id: u64,
    /// `certificate_id` as text, for metric labels without a per-request allocation.
    pub certificate_label: String,
    /// This mapping's series of `mtls_gateway_mapped_requests_total`, resolved on first use.
    pub requests: std::sync::OnceLock<prometheus::IntCounter>,
    /// `None` when the certificate is missing from the store or never loaded.
    pub certificate: Option<Arc<LoadedCert>>,
}

impl Target {
    /// The per-mapping request counter (labels: account, service, certificate).
    pub fn requests_counter(&self) -> &prometheus::IntCounter {
        self.requests.get_or_init(|| {
            crate::metrics::MAPPED_REQUESTS.with_label_values(&[
                &self.account,
                &self.service,
                &self.certificate_label,
            ])
        })
    }
}

#[derive(Debug, Default)]
struct Table {
    exact: HashMap<String, Arc<Target>>,
    wildcard: HashMap<String, Arc<Target>>,
    /// Distinct wildcard prefix lengths, longest first.
    wildcard_lens: Vec<usize>,
}

/// account -> service -> table.
#[derive(Debug, Default)]
pub struct MappingIndex {
    accounts: HashMap<String, HashMap<String, Table>>,
    len: usize,
}

/// How a URL matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchKind {
    Exact,
    Wildcard,
}

impl MappingIndex {
    /// Build from mappings (deleted and disabled ones are left out) and the certificate entries.
    /// Mappings whose URL does not normalise are skipped and returned as errors.
    pub fn build<'a>(
        mappings: impl IntoIterator<Item = &'a Mapping>,
        certs: &HashMap<(String, u64), CertEntry>,
    ) -> (MappingIndex, Vec<(u64, String)>) {
        let mut idx = MappingIndex::default();
        let mut errors = Vec::new();
        for m in mappings {
            if m.deleted || !m.enabled {
                continue;
            }
            let Some(pattern) = UrlPattern::parse(&m.url) else {
                errors.push((
                    m.id,
                    format!("mapping url {:?} is not an absolute http(s) URL", m.url),
                ));
                continue;
            };
            let certificate = certs
                .get(&(m.account_id.clone(), m.certificate_id))
                .and_then(|e| e.cert().cloned());
            let target = Arc::new(Target {
                mapping_id: m.id,
                mapping_name: m.name.clone(),
                account: m.account_id.clone(),
                service: m.service_name.to_ascii_uppercase(),
                certificate_id: m.certificate_id,
                certificate_label: m.certificate_id.to_string(),
                requests: std::sync::OnceLock::new(),
                certificate,
            });
            let table = idx
                .accounts
                .entry(m.account_id.clone())
                .or_default()
                .entry(m.service_name.to_ascii_uppercase())
                .or_default();
            match pattern {
                UrlPattern::Exact(u) => {
                    table.exact.insert(u, target);
                }
                UrlPattern::Prefix(p) => {
                    if !table.wildcard_lens.contains(&p.len()) {
                        table.wildcard_lens.push(p.len());
                    }
                    table.wildcard.insert(p, target);
                }
            }
            idx.len += 1;
        }
        for services in idx.accounts.values_mut() {
            for t in services.values_mut() {
                t.wildcard_lens.sort_unstable_by(|a, b| b.cmp(a));
            }
        }
        (idx, errors)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Find the mapping for an already normalised URL.
    pub fn lookup(
        &self,
        account: &str,
        service: &str,
        normalized_url: &str,
    ) -> Option<(&Arc<Target>, MatchKind)> {
        let table = self.accounts.get(account)?.get(service)?;
        if let Some(t) = table.exact.get(normalized_url) {
            return Some((t, MatchKind::Exact));
        }
        for &len in &table.wildcard_lens {
            if len <= normalized_url.len() && normalized_url.is_char_boundary(len) {
                if let Some(t) = table.wildcard.get(&normalized_url[..len]) {
                    return Some((t, MatchKind::Wildcard));
                }
            }
        }
        None
    }
}

/// A mapping URL: exact, or a prefix when it ends in `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlPattern {
    Exact(String),
    Prefix(String),
}

impl UrlPattern {
    pub fn parse(url: &str) -> Option<UrlPattern> {
        match url.strip_suffix('*') {
            Some(prefix) => normalize_url(prefix).map(UrlPattern::Prefix),
            None => normalize_url(url).map(UrlPattern::Exact),
        }
    }
}

/// Normalise an absolute http(s) URL for matching: scheme and host lower-cased, default port
/// dropped, empty path made `/`, fragment dropped. Path and query are kept as sent. Returns `None`
/// for anything that is not an absolute http(s) URL with a host (userinfo is refused: it would let
/// `https://bank.test@evil.test/` look like a bank URL).
pub fn normalize_url(url: &str) -> Option<String> {
    normalize_url_checked(url).ok()
}

/// [`normalize_url`], saying why a URL is refused. The path is held to the request path's rules
/// (`crate::http1::codec`): only RFC 3986 characters, no `%2F`, `%5C` or encoded dot-segments,
/// and dot-segments resolved, so a mapping, a check and a request are compared in one form.
pub fn normalize_url_checked(url: &str) -> Result<String, String> {
    use crate::http1::codec::{check_uri_chars, resolve_path};
    let (scheme, rest) = url
        .split_once("://")
        .ok_or("not an absolute URL (scheme://host/path)")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "https" => "443",
        "http" => "80",
        _ => return Err(format!("scheme {scheme:?} is not http or https")),
    };
    let rest = rest.split('#').next().unwrap_or("");
    let auth_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path_query) = rest.split_at(auth_end);
    let (host, port) = split_host_port(authority)
        .ok_or_else(|| format!("{authority:?} is not a host with an optional port"))?;
    if !host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:[]%".contains(&b))
    {
        return Err(format!(
            "the host {host:?} has characters a host name may not have"
        ));
    }
    check_uri_chars(path_query, "the URL's path")?;
    let path_query = if path_query.starts_with('/') {
        resolve_path(path_query)?
    } else {
        resolve_path(&format!("/{path_query}"))?
    };
    let mut out = String::with_capacity(url.len() + 1);
    out.push_str(&scheme);
    out.push_str("://");
    for c in host.chars() {
        out.push(c.to_ascii_lowercase());
    }
    if let Some(p) = port {
        if p != default_port {
            out.push(':');
            out.push_str(p);
        }
    }
    out.push_str(&path_query);
    Ok(out)
}

/// Split `host[:port]` (IPv6 in brackets). Refuses userinfo, empty hosts and non-numeric ports.
pub fn split_host_port(authority: &str) -> Option<(&str, Option<&str>)> {
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let (host, port) = if let Some(stripped) = authority.strip_prefix('[') {
        let end = stripped.find(']')?;
        let host = &authority[..end + 2];
        let after = &stripped[end + 1..];
        match after.strip_prefix(':') {
            Some(p) => (host, Some(p)),
            None if after.is_empty() => (host, None),
            None => return None,
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() || host.bytes().any(|b| b.is_ascii_whitespace() || b == b'/') {
        return None;
    }
    if let Some(p) = port {
        if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        p.parse::<u16>().ok()?;
    }
    Some((host, port))
}

/// The immutable state the proxy serves from.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// 0 = the empty placeholder before the first successful refresh.
    pub generation: u64,
    pub built_at: Option<SystemTime>,
    pub certs: HashMap<(String, u64), CertEntry>,
    /// account -> (version, document)
    pub mappings: HashMap<String, (String, Arc<MappingDocument>)>,
    pub index: MappingIndex,
}

impl Snapshot {
    pub fn empty() -> Snapshot {
        Snapshot::default()
    }

    pub fn is_loaded(&self) -> bool {
        self.generation > 0
    }

    pub fn lookup(
        &self,
        account: &str,
        service: &str,
        normalized_url: &str,
    ) -> Option<(&Arc<Target>, MatchKind)> {
        self.index.lookup(account, service, normalized_url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_lowercases_scheme_and_host_and_drops_default_port() {
        assert_eq!(
            normalize_url("HTTPS://Bank.Test:443/Api?X=1").as_deref(),
            Some("https://bank.test/Api?X=1")
        );
        assert_eq!(
            normalize_url("http://a.test:80").as_deref(),
            Some("http://a.test/")
        );
        assert_eq!(
            normalize_url("https://a.test:8443/p#frag").as_deref(),
            Some("https://a.test:8443/p")
        );
        assert_eq!(
            normalize_url("https://[::1]:9443/x").as_deref(),
            Some("https://[::1]:9443/x")
        );
        assert_eq!(
            normalize_url("https://a.test?q").as_deref(),
            Some("https://a.test/?q")
        );
    }

    #[test]
    fn normalize_refuses_userinfo_other_schemes_and_bad_ports() {
        assert!(normalize_url("https://bank.test@evil.test/").is_none());
        assert!(normalize_url("ftp://a.test/").is_none());
        assert!(normalize_url("https://a.test:99999/").is_none());
        assert!(normalize_url("https://:80/").is_none());
        assert!(normalize_url("a.test/x").is_none());
        // The request path's rules: dot-segments resolved, encoded separators and characters
        // outside RFC 3986 refused.
        assert_eq!(
            normalize_url("https://a.test/api/../admin").as_deref(),
            Some("https://a.test/admin")
        );
        assert!(normalize_url("https://a.test/api/%2e%2e/admin").is_none());
        assert!(normalize_url("https://a.test/api%2Fadmin").is_none());
        assert!(normalize_url("https://a.test/a b").is_none());
        assert!(normalize_url("https://a.test/{x}").is_none());
    }

    fn m(id: u64, url: &str, cert: u64) -> Mapping {
        Mapping {
            id,
            account_id: "acc".into(),
            name: format!("m{id}"),
            service_name: "IDP".into(),
            url: url.into(),
            certificate_id: cert,
            enabled: true,
            deleted: false,
            cutover_check: None,
        }
    }

    #[test]
    fn exact_beats_wildcard_and_longest_wildcard_wins() {
        let maps = [
            m(1, "https://bank.test/api/*", 10),
            m(2, "https://bank.test/api/v2/*", 20),
            m(3, "https://bank.test/api/v2/pay", 30),
        ];
        let (idx, errs) = MappingIndex::build(maps.iter(), &HashMap::new());
        assert!(errs.is_empty());
        let look = |u: &str| {
            idx.lookup("acc", "IDP", &normalize_url(u).unwrap_or_default())
                .map(|(t, k)| (t.mapping_id, k))
        };
        assert_eq!(
            look("https://bank.test/api/v2/pay"),
            Some((3, MatchKind::Exact))
        );
        assert_eq!(
            look("https://bank.test/api/v2/pay?x=1"),
            Some((2, MatchKind::Wildcard))
        );
        assert_eq!(
            look("https://BANK.test:443/api/v1"),
            Some((1, MatchKind::Wildcard))
        );
        assert_eq!(look("https://bank.test/other"), None);
        assert_eq!(look("https://bank.test.evil/api/x"), None);
        assert!(idx
            .lookup("other", "IDP", "https://bank.test/api/x")
            .is_none());
        assert!(idx
            .lookup("acc", "WEBHOOKS", "https://bank.test/api/x")
            .is_none());
    }

    #[test]
    fn exact_match_includes_the_query() {
        let maps = [m(1, "https://bank.test/api?a=1", 10)];
        let (idx, _) = MappingIndex::build(maps.iter(), &HashMap::new());
        assert!(idx
            .lookup("acc", "IDP", "https://bank.test/api?a=1")
            .is_some());
        assert!(idx
            .lookup("acc", "IDP", "https://bank.test/api?a=2")
            .is_none());
        assert!(idx.lookup("acc", "IDP", "https://bank.test/api").is_none());
    }

    #[test]
    fn disabled_and_deleted_mappings_are_not_indexed() {
        let mut a = m(1, "https://a.test/", 1);
        a.enabled = false;
        let mut b = m(2, "https://b.test/", 1);
        b.deleted = true;
        let (idx, _) = MappingIndex::build([a, b].iter(), &HashMap::new());
        assert!(idx.is_empty());
    }
}
