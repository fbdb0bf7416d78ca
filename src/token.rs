//! `skiff token create|list|delete`: bootstrap tokens for joining nodes, managed through
//! the API with the administrator's kubeconfig, as `kubeadm token` does. A token is a
//! `kube-system` Secret of type `bootstrap.kubernetes.io/token`; deleting it revokes the
//! token, and the token cleaner deletes it once it expires.

use std::path::Path;
use std::time::Duration;

use base64::Engine;
use chrono::{DateTime, Utc};
use serde_json::Value;
use skiff_actors::api::ApiError;
use skiff_actors::client::{ApiClient, Credentials, HttpClient, ListParams};
use skiff_actors::gateway::auth::bootstrap_token::{
    self, expiration, field, TokenSpec, NAMESPACE, SECRET_PREFIX, SECRET_TYPE,
};

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("reading the kubeconfig {path}: {detail}")]
    Kubeconfig { path: String, detail: String },
    #[error("{0:?} is not a duration (examples: 24h, 90m, 1h30m, 0 for never)")]
    BadDuration(String),
    #[error("{0:?} is neither a token id ([a-z0-9]{{6}}) nor a token")]
    BadToken(String),
    #[error("usage {0:?}: expected authentication or signing")]
    BadUsage(String),
    #[error("group {0:?}: extra groups must start with system:bootstrappers:")]
    BadGroup(String),
    #[error("generating a token: {0}")]
    Random(String),
    #[error(transparent)]
    Api(#[from] ApiError),
}

/// A client for the API server and credentials a kubeconfig's current context names
/// (inline `-data` fields or files beside it; a token or a client certificate).
pub fn client_from_kubeconfig(path: &Path) -> Result<HttpClient, TokenError> {
    let fail = |detail: String| TokenError::Kubeconfig {
        path: path.display().to_string(),
        detail,
    };
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    let doc: Value = serde_yaml_ng::from_str(&text).map_err(|e| fail(e.to_string()))?;
    let current = doc["current-context"].as_str().unwrap_or_default();
    let named = |list: &str, name: &str| -> Option<Value> {
        doc[list]
            .as_array()?
            .iter()
            .find(|e| e["name"].as_str() == Some(name))
            .cloned()
    };
    let context =
        named("contexts", current).ok_or_else(|| fail(format!("no context {current:?}")))?;
    let cluster_name = context["context"]["cluster"].as_str().unwrap_or_default();
    let user_name = context["context"]["user"].as_str().unwrap_or_default();
    let cluster = named("clusters", cluster_name)
        .ok_or_else(|| fail(format!("no cluster {cluster_name:?}")))?;
    let user = named("users", user_name)
        .map(|u| u["user"].clone())
        .unwrap_or_default();
    let base = path.parent().unwrap_or_else(|| Path::new("."));
    // A `<field>-data` (base64) or a `<field>` file, relative to the kubeconfig.
    let material = |entry: &Value, name: &str| -> Result<Option<Vec<u8>>, TokenError> {
        if let Some(data) = entry[format!("{name}-data")].as_str() {
            return base64::engine::general_purpose::STANDARD
                .decode(data)
                .map(Some)
                .map_err(|e| fail(format!("{name}-data: {e}")));
        }
        match entry[name].as_str() {
            Some(file) => std::fs::read(base.join(file))
                .map(Some)
                .map_err(|e| fail(format!("{name} {file}: {e}"))),
            None => Ok(None),
        }
    };
    let server = cluster["cluster"]["server"]
        .as_str()
        .ok_or_else(|| fail("the cluster has no server".into()))?;
    let identity = match (
        material(&user, "client-certificate")?,
        material(&user, "client-key")?,
    ) {
        (Some(mut cert), Some(key)) => {
            cert.extend_from_slice(b"\n");
            cert.extend(key);
            Some(cert)
        }
        _ => None,
    };
    let creds = Credentials {
        ca_pem: material(&cluster["cluster"], "certificate-authority")?,
        identity_pem: identity,
        token: user["token"].as_str().map(str::to_string),
    };
    Ok(HttpClient::with_credentials(server, &creds)?)
}

/// A Go-style duration (`24h`, `1h30m`, `90s`); `0` is none.
pub fn parse_duration(s: &str) -> Result<Duration, TokenError> {
    let bad = || TokenError::BadDuration(s.to_string());
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = 0u64;
    let mut digits = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let n: u64 = digits.parse().map_err(|_| bad())?;
        digits.clear();
        total += n * match c {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return Err(bad()),
        };
    }
    if !digits.is_empty() || s.is_empty() {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

/// Make a token and its Secret; returns the token.
pub async fn create(
    client: &dyn ApiClient,
    ttl: Duration,
    description: &str,
    usages: &[String],
    groups: &[String],
    now: DateTime<Utc>,
) -> Result<String, TokenError> {
    for u in usages {
        if u != "authentication" && u != "signing" {
            return Err(TokenError::BadUsage(u.clone()));
        }
    }
    for g in groups {
        if !g.starts_with("system:bootstrappers:") {
            return Err(TokenError::BadGroup(g.clone()));
        }
    }
    let token =
        skiff_actors::pki::new_join_token().map_err(|e| TokenError::Random(e.to_string()))?;
    let mut spec = TokenSpec::for_joining(&token, None, description)
        .ok_or_else(|| TokenError::BadToken(token.clone()))?;
    spec.expiration = (!ttl.is_zero())
        .then(|| now + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX));
    spec.usages = usages.to_vec();
    spec.groups = groups.to_vec();
    client
        .create("secrets", Some(NAMESPACE), spec.secret_object())
        .await?;
    Ok(token)
}

/// The tokens as `kubeadm token list` prints them.
pub async fn list(client: &dyn ApiClient, now: DateTime<Utc>) -> Result<String, TokenError> {
    let params = ListParams {
        label_selector: None,
        field_selector: Some(format!("type={SECRET_TYPE}")),
    };
    let secrets = client.list("secrets", Some(NAMESPACE), &params).await?;
    let mut rows = vec![[
        "TOKEN".to_string(),
        "TTL".into(),
        "EXPIRES".into(),
        "USAGES".into(),
        "DESCRIPTION".into(),
        "EXTRA GROUPS".into(),
    ]];
    for s in secrets
        .items
        .iter()
        .filter(|s| bootstrap_token::is_token_secret(s))
    {
        let (Some(id), Some(secret)) = (field(s, "token-id"), field(s, "token-secret")) else {
            continue;
        };
        let (ttl, expires) = match expiration(s) {
            Ok(Some(t)) => {
                let left = (t - now).num_seconds();
                let ttl = if left <= 0 {
                    "<invalid>".to_string()
                } else {
                    human(left)
                };
                (ttl, t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
            }
            Ok(None) => ("<forever>".into(), "<never>".into()),
            Err(raw) => ("<invalid>".into(), raw),
        };
        let usages: Vec<&str> = ["authentication", "signing"]
            .into_iter()
            .filter(|u| field(s, &format!("usage-bootstrap-{u}")).as_deref() == Some("true"))
            .collect();
        rows.push([
            format!("{id}.{secret}"),
            ttl,
            expires,
            usages.join(","),
            field(s, "description").unwrap_or_else(|| "<none>".into()),
            field(s, "auth-extra-groups").unwrap_or_default(),
        ]);
    }
    let widths: Vec<usize> = (0..6)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in &rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("   ").trim_end());
        out.push('\n');
    }
    Ok(out)
}

fn human(seconds: i64) -> String {
    match seconds {
        s if s >= 3600 => format!("{}h", s / 3600),
        s if s >= 60 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// Delete a token, named by its id or the whole token.
pub async fn delete(client: &dyn ApiClient, id_or_token: &str) -> Result<String, TokenError> {
    let id = match bootstrap_token::parts(id_or_token) {
        Some((id, _)) => id,
        None if id_or_token.len() == 6
            && id_or_token
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()) =>
        {
            id_or_token
        }
        None => return Err(TokenError::BadToken(id_or_token.to_string())),
    };
    client
        .delete(
            "secrets",
            Some(NAMESPACE),
            &format!("{SECRET_PREFIX}{id}"),
            None,
        )
        .await?;
    Ok(id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_go_writes_them() {
        assert_eq!(parse_duration("24h").unwrap(), Duration::from_secs(86_400));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5_400));
        assert_eq!(parse_duration("45s").unwrap(), Duration::from_secs(45));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        for bad in ["", "24", "h", "1d", "-1h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
