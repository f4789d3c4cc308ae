//! Name resolution, once per request: every address is checked by the
//! policy, and the proxy connects only to a checked address (no second
//! lookup, so DNS rebinding cannot slip a different address in).

use hickory_resolver::TokioResolver;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("`{0}` did not resolve: {1}")]
    Failed(String, String),
    #[error("`{0}` resolved to no address")]
    Empty(String),
}

/// The resolver seam: overrides (`--resolve`) first, then DNS.
#[derive(Clone)]
pub struct Resolver {
    overrides: Arc<HashMap<String, Vec<IpAddr>>>,
    dns: Option<TokioResolver>,
}

impl Resolver {
    /// The system's DNS configuration (`/etc/resolv.conf`, `/etc/hosts`).
    /// Without one, only overrides and IP literals resolve.
    pub fn system(overrides: HashMap<String, Vec<IpAddr>>) -> Resolver {
        let dns = TokioResolver::builder_tokio()
            .ok()
            .and_then(|b| b.build().ok());
        Resolver {
            overrides: Arc::new(overrides),
            dns,
        }
    }

    /// Whether `--resolve` answers this name (no DNS query is made).
    pub fn overrides(&self, host: &str) -> bool {
        self.overrides.contains_key(host)
    }

    /// Addresses of a normalised host name.
    pub async fn resolve(&self, host: &str) -> Result<Vec<IpAddr>, ResolveError> {
        if let Some(ips) = self.overrides.get(host) {
            return Ok(ips.clone());
        }
        let Some(dns) = &self.dns else {
            return Err(ResolveError::Failed(
                host.into(),
                "no DNS configuration".into(),
            ));
        };
        // A trailing dot makes the name absolute: no search domains, so
        // `api` never quietly becomes `api.corp.internal`.
        let fqdn = format!("{host}.");
        let found = dns
            .lookup_ip(fqdn.as_str())
            .await
            .map_err(|e| ResolveError::Failed(host.into(), e.to_string()))?;
        let ips: Vec<IpAddr> = found.iter().collect();
        if ips.is_empty() {
            return Err(ResolveError::Empty(host.into()));
        }
        Ok(ips)
    }
}
