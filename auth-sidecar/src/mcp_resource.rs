//! An MCP server as an OAuth protected resource: its canonical URI (RFC 8707 / MCP
//! authorization spec), where its Protected Resource Metadata (RFC 9728) is published, that
//! document itself, and what a verified token grants it (audiences and scopes).
//!
//! A leaf: no HTTP types, no other module. The document format has its home here; the
//! `WWW-Authenticate` values that point at it are rendered by `http::answer`.

use reqwest::Url;
use serde_json::{Map, Value};

/// RFC 9728 §3: the well-known suffix, inserted between the host and the resource's path.
pub const WELL_KNOWN: &str = "/.well-known/oauth-protected-resource";

/// The canonical form of a resource URI: lower-case scheme and host (the URL parser does
/// that), no default port, no fragment, no query, no user info, and no lone trailing `/`
/// (`https://mcp.example.com/` → `https://mcp.example.com`). `https`, or `http` on a
/// loopback host for development. The error says what is wrong, for config messages.
pub fn canonical_resource(uri: &str) -> Result<String, String> {
    let url = Url::parse(uri).map_err(|e| format!("{uri:?} is not an absolute URI: {e}"))?;
    let host = url
        .host_str()
        .ok_or_else(|| format!("{uri:?} has no host"))?;
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(host) => {}
        "http" => {
            return Err(format!(
                "{uri:?} must use https (http only on a loopback host, for development)"
            ));
        }
        other => return Err(format!("{uri:?}: scheme {other:?} is not https")),
    }
    if url.fragment().is_some() || uri.contains('#') {
        return Err(format!("{uri:?} must not have a fragment (RFC 8707 §2)"));
    }
    if url.query().is_some() {
        return Err(format!(
            "{uri:?} must not have a query (RFC 8707 §2: a resource is named by scheme, host, port and path)"
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!("{uri:?} must not carry user info"));
    }
    Ok(canonical_of(&url))
}

fn canonical_of(url: &Url) -> String {
    let mut s = url.as_str().to_owned();
    if url.path() == "/" && s.ends_with('/') {
        s.pop();
    }
    s
}

/// An audience value compared in canonical form: a URI is canonicalised leniently (any
/// scheme, query kept), anything else compared as written.
pub fn canonical_audience(aud: &str) -> String {
    match Url::parse(aud) {
        Ok(url) if url.host_str().is_some() && url.fragment().is_none() => canonical_of(&url),
        _ => aud.to_owned(),
    }
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host == "[::1]"
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// One protected resource, as configured by an `mcp:` block (every rule naming the same
/// resource shares one).
#[derive(Debug, PartialEq, Eq)]
pub struct Resource {
    /// The canonical URI: what `aud` must contain.
    pub uri: String,
    /// `scheme://host[:port]/.well-known/oauth-protected-resource[/path]`.
    pub metadata_url: String,
    /// The path the metadata is served at (the sidecar's public route).
    pub metadata_path: String,
    /// `host[:port]` of the resource, lower-case, to tell resources with one path apart.
    pub authority: String,
    /// The RFC 9728 document, rendered once.
    pub document: String,
}

/// What the `mcp:` block says about its resource (the parts published in the metadata).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Metadata {
    pub authorization_servers: Vec<String>,
    pub scopes_supported: Vec<String>,
    pub resource_documentation: Option<String>,
}

impl Resource {
    /// `uri` must be canonical ([`canonical_resource`]).
    pub fn new(uri: &str, metadata: &Metadata) -> Resource {
        let url = Url::parse(uri).expect("canonical resources parse");
        let authority = match url.port() {
            Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
            None => url.host_str().unwrap_or_default().to_owned(),
        };
        let path = url.path().trim_end_matches('/');
        let metadata_path = format!("{WELL_KNOWN}{path}");
        let metadata_url = format!("{}://{authority}{metadata_path}", url.scheme());
        let mut doc = Map::new();
        doc.insert("resource".into(), Value::from(uri));
        doc.insert(
            "authorization_servers".into(),
            Value::from(metadata.authorization_servers.clone()),
        );
        if !metadata.scopes_supported.is_empty() {
            doc.insert(
                "scopes_supported".into(),
                Value::from(metadata.scopes_supported.clone()),
            );
        }
        // MCP forbids tokens in the query; cookies are a browser matter.
        doc.insert(
            "bearer_methods_supported".into(),
            Value::from(vec!["header"]),
        );
        if let Some(docs) = &metadata.resource_documentation {
            doc.insert("resource_documentation".into(), Value::from(docs.as_str()));
        }
        Resource {
            uri: uri.to_owned(),
            metadata_url,
            metadata_path,
            authority,
            document: Value::Object(doc).to_string(),
        }
    }
}

/// Whether `scope` is a scope token (RFC 6749 §3.3: `%x21 / %x23-5B / %x5D-7E`), so it can
/// stand in a quoted `scope="..."` and a space-separated claim.
pub fn is_scope_token(scope: &str) -> bool {
    !scope.is_empty()
        && scope
            .bytes()
            .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
}

/// What a verified token grants, for per-rule resource and scope checks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Grants {
    /// `aud`, in canonical form.
    pub audiences: Box<[Box<str>]>,
    /// `scope` (space-separated, RFC 9068 / RFC 8693) and `scp` (a list or a string).
    pub scopes: Box<[Box<str>]>,
}

impl Grants {
    /// Reads `aud`, `scope` and `scp`; values of another shape grant nothing.
    pub fn from_claims(claims: &Map<String, Value>) -> Grants {
        let strings = |v: Option<&Value>, split: bool| -> Vec<Box<str>> {
            match v {
                Some(Value::String(s)) if split => s
                    .split(' ')
                    .filter(|p| !p.is_empty())
                    .map(Box::from)
                    .collect(),
                Some(Value::String(s)) => vec![Box::from(s.as_str())],
                Some(Value::Array(list)) => list
                    .iter()
                    .filter_map(Value::as_str)
                    .map(Box::from)
                    .collect(),
                _ => Vec::new(),
            }
        };
        let audiences = strings(claims.get("aud"), false)
            .iter()
            .map(|a| Box::from(canonical_audience(a)))
            .collect();
        let mut scopes = strings(claims.get("scope"), true);
        scopes.extend(strings(claims.get("scp"), true));
        Grants {
            audiences,
            scopes: scopes.into(),
        }
    }

    /// Whether `aud` names the canonical resource `uri`.
    pub fn has_audience(&self, uri: &str) -> bool {
        self.audiences.iter().any(|a| &**a == uri)
    }

    /// Whether every scope in `required` was granted.
    pub fn has_scopes(&self, required: &[Box<str>]) -> bool {
        required.iter().all(|r| self.scopes.contains(r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_forms() {
        for (given, want) in [
            ("https://MCP.Example.com/mcp", "https://mcp.example.com/mcp"),
            (
                "HTTPS://mcp.example.com:443/mcp",
                "https://mcp.example.com/mcp",
            ),
            ("https://mcp.example.com/", "https://mcp.example.com"),
            ("https://mcp.example.com", "https://mcp.example.com"),
            (
                "https://mcp.example.com:8443/a/b",
                "https://mcp.example.com:8443/a/b",
            ),
            ("http://127.0.0.1:8080/mcp", "http://127.0.0.1:8080/mcp"),
            ("http://localhost/mcp", "http://localhost/mcp"),
            ("http://[::1]:9/mcp", "http://[::1]:9/mcp"),
        ] {
            assert_eq!(canonical_resource(given).as_deref(), Ok(want), "{given}");
        }
    }

    #[test]
    fn refused_resources_say_why() {
        for (given, says) in [
            ("mcp.example.com/mcp", "absolute"),
            ("http://mcp.example.com/mcp", "https"),
            ("ftp://mcp.example.com/mcp", "scheme"),
            ("https://mcp.example.com/mcp#x", "fragment"),
            ("https://mcp.example.com/mcp#", "fragment"),
            ("https://mcp.example.com/mcp?a=1", "query"),
            ("https://u:p@mcp.example.com/mcp", "user info"),
        ] {
            let e = canonical_resource(given).expect_err(given);
            assert!(e.contains(says), "{given}: {e}");
        }
    }

    #[test]
    fn metadata_url_is_path_inserted() {
        let meta = Metadata {
            authorization_servers: vec!["https://idp.example.com".into()],
            scopes_supported: vec!["mcp:tools".into()],
            resource_documentation: Some("https://docs.example.com/mcp".into()),
        };
        let r = Resource::new("https://mcp.example.com:8443/api/mcp", &meta);
        assert_eq!(
            r.metadata_url,
            "https://mcp.example.com:8443/.well-known/oauth-protected-resource/api/mcp"
        );
        assert_eq!(
            r.metadata_path,
            "/.well-known/oauth-protected-resource/api/mcp"
        );
        assert_eq!(r.authority, "mcp.example.com:8443");
        let doc: Value = serde_json::from_str(&r.document).expect("JSON");
        assert_eq!(doc["resource"], "https://mcp.example.com:8443/api/mcp");
        assert_eq!(doc["authorization_servers"][0], "https://idp.example.com");
        assert_eq!(doc["scopes_supported"][0], "mcp:tools");
        assert_eq!(doc["bearer_methods_supported"][0], "header");
        assert_eq!(
            doc["resource_documentation"],
            "https://docs.example.com/mcp"
        );
        let root = Resource::new("https://mcp.example.com", &meta);
        assert_eq!(
            root.metadata_url,
            "https://mcp.example.com/.well-known/oauth-protected-resource"
        );
    }

    #[test]
    fn grants_compare_canonically() {
        let claims: Map<String, Value> = serde_json::from_value(serde_json::json!({
            "aud": ["other", "HTTPS://MCP.example.com:443/mcp"],
            "scope": "mcp:tools  mcp:read",
            "scp": ["admin"],
        }))
        .expect("claims");
        let g = Grants::from_claims(&claims);
        assert!(g.has_audience("https://mcp.example.com/mcp"));
        assert!(!g.has_audience("https://mcp.example.com/mcp2"));
        assert!(g.has_scopes(&["mcp:tools".into(), "admin".into()]));
        assert!(!g.has_scopes(&["mcp:write".into()]));
        let none = Grants::from_claims(&Map::new());
        assert!(!none.has_audience("https://mcp.example.com/mcp"));
        assert!(none.has_scopes(&[]));
    }

    #[test]
    fn scope_tokens() {
        assert!(is_scope_token("mcp:tools"));
        assert!(!is_scope_token(""));
        assert!(!is_scope_token("a b"));
        assert!(!is_scope_token("a\"b"));
        assert!(!is_scope_token("a\\b"));
    }
}
