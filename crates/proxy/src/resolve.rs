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

    /// Asks these name servers (`--dns-upstream`), over UDP and TCP,
    /// instead of the system's.
    pub fn with_servers(
        overrides: HashMap<String, Vec<IpAddr>>,
        servers: &[std::net::SocketAddr],
    ) -> Resolver {
        use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
        let ns = servers
            .iter()
            .map(|a| {
                let mut udp = ConnectionConfig::udp();
                udp.port = a.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = a.port();
                NameServerConfig::new(a.ip(), true, vec![udp, tcp])
            })
            .collect();
        let config = ResolverConfig::from_name_servers(ns);
        let provider = hickory_resolver::net::runtime::TokioRuntimeProvider::default();
        let dns = TokioResolver::builder_with_config(config, provider)
            .build()
            .ok();
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

/// What veto's DNS listener answers for an allowed name.
pub enum Answer {
    Records(Vec<hickory_resolver::proto::rr::Record>),
    /// The name exists, with no records of that type.
    NoData,
    NxDomain,
}

/// How long `--resolve` answers may be cached by the asking client.
const OVERRIDE_TTL: u32 = 60;

impl Resolver {
    /// The records of `qtype` for a normalised name, as the DNS listener
    /// answers them: `--resolve` first (addresses only), then DNS.
    pub async fn records(
        &self,
        host: &str,
        qtype: hickory_resolver::proto::rr::RecordType,
    ) -> Result<Answer, ResolveError> {
        use hickory_resolver::proto::rr::{Name, RData, Record, RecordType, rdata};
        let fqdn = format!("{host}.");
        if let Some(ips) = self.overrides.get(host) {
            let name = Name::from_ascii(&fqdn)
                .map_err(|e| ResolveError::Failed(host.into(), e.to_string()))?;
            let records: Vec<Record> = ips
                .iter()
                .filter_map(|ip| match (ip, qtype) {
                    (IpAddr::V4(v4), RecordType::A) => Some(RData::A(rdata::A(*v4))),
                    (IpAddr::V6(v6), RecordType::AAAA) => Some(RData::AAAA(rdata::AAAA(*v6))),
                    _ => None,
                })
                .map(|d| Record::from_rdata(name.clone(), OVERRIDE_TTL, d))
                .collect();
            return Ok(if records.is_empty() {
                Answer::NoData
            } else {
                Answer::Records(records)
            });
        }
        let Some(dns) = &self.dns else {
            return Err(ResolveError::Failed(
                host.into(),
                "no DNS configuration".into(),
            ));
        };
        match dns.lookup(fqdn.as_str(), qtype).await {
            Ok(found) => Ok(Answer::Records(found.answers().to_vec())),
            Err(e) if e.is_nx_domain() => Ok(Answer::NxDomain),
            Err(e) if e.is_no_records_found() => Ok(Answer::NoData),
            Err(e) => Err(ResolveError::Failed(host.into(), e.to_string())),
        }
    }
}
