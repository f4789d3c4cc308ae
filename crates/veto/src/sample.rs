//! A request described by a person (a test case, `explain` flags, a bench
//! sample) rather than seen on the wire: owned, and turned into the
//! engine's borrowed [`Request`] on demand.

use std::net::IpAddr;
use veto_policy::{
    DataSet, Host, Protocol, Request, TargetError, Timestamp, normalize_host, normalize_path,
};

#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    #[error("invalid url `{0}`: {1}")]
    Url(String, String),
    #[error("url `{0}` must be http:// or https://")]
    Scheme(String),
    #[error("invalid connect target `{0}`: expected HOST:PORT")]
    Connect(String),
    #[error("invalid host: {0}")]
    Host(#[from] veto_policy::HostError),
    #[error("a request needs exactly one of `url` or `connect`")]
    Target,
    #[error("protocol `{0}` does not fit a {1} request")]
    Protocol(String, &'static str),
}

/// What a request sends, for the data detectors.
#[derive(Debug, Default, Clone)]
pub struct Payload {
    /// Path and query as sent.
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// An owned request.
#[derive(Debug, Clone)]
pub struct Sample {
    pub machine: String,
    pub protocol: Protocol,
    pub host: Host,
    pub port: u16,
    pub ips: Vec<IpAddr>,
    pub method: String,
    pub path: String,
    pub payload: Payload,
    pub data: DataSet,
    pub now: Timestamp,
}

/// Splits `host:port`, `[v6]:port`.
pub fn split_host_port(s: &str) -> Option<(&str, u16)> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, p) = rest.split_once("]:")?;
        (h, p)
    } else {
        s.rsplit_once(':')?
    };
    let port: u16 = port.parse().ok().filter(|p| *p > 0)?;
    Some((host, port))
}

impl Sample {
    /// A request that veto can see: plain `http://` or inside an opened
    /// tunnel (`https://`).
    pub fn from_url(
        machine: &str,
        method: &str,
        url: &str,
        payload: Payload,
    ) -> Result<Sample, SampleError> {
        let u = url::Url::parse(url).map_err(|e| SampleError::Url(url.into(), e.to_string()))?;
        let protocol = match u.scheme() {
            "http" => Protocol::Http,
            "https" => Protocol::Https,
            _ => return Err(SampleError::Scheme(url.into())),
        };
        let host_str = match u.host() {
            Some(url::Host::Domain(d)) => d.to_string(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            None => return Err(SampleError::Url(url.into(), "no host".into())),
        };
        let host = normalize_host(&host_str)?;
        let port = u.port_or_known_default().unwrap_or(80);
        // The target as written, not as the url crate cleans it up (it
        // removes dot segments and reads `\` as `/`): the proxy decides on
        // the policy's normal form of what the client sent, and so must
        // this (see `apply_paths`).
        let target = raw_target(url);
        let path = normalize_path(&target).into_owned();
        Ok(Sample {
            machine: machine.into(),
            protocol,
            host,
            port,
            ips: Vec::new(),
            method: method.to_ascii_uppercase(),
            path,
            payload: Payload { target, ..payload },
            data: DataSet::EMPTY,
            now: 0,
        })
    }

    /// A DNS lookup of a name, as veto's DNS listener decides it.
    pub fn from_lookup(machine: &str, name: &str) -> Result<Sample, SampleError> {
        Ok(Sample {
            machine: machine.into(),
            protocol: Protocol::Dns,
            host: normalize_host(name.trim_end_matches('.'))?,
            port: 53,
            ips: Vec::new(),
            method: String::new(),
            path: String::new(),
            payload: Payload::default(),
            data: DataSet::EMPTY,
            now: 0,
        })
    }

    /// A CONNECT tunnel veto does not open.
    pub fn from_connect(
        machine: &str,
        target: &str,
        protocol: Protocol,
    ) -> Result<Sample, SampleError> {
        if protocol.is_http() {
            return Err(SampleError::Protocol(protocol.as_str().into(), "connect"));
        }
        let (host, port) =
            split_host_port(target).ok_or_else(|| SampleError::Connect(target.into()))?;
        Ok(Sample {
            machine: machine.into(),
            protocol,
            host: normalize_host(host)?,
            port,
            ips: Vec::new(),
            method: String::new(),
            path: String::new(),
            payload: Payload::default(),
            data: DataSet::EMPTY,
            now: 0,
        })
    }

    /// Runs the policy's data detectors over what the request sends.
    pub fn detect(&mut self, detector: &veto_proxy::inspect::Detectors) {
        if self.protocol.is_http() {
            let p = &self.payload;
            let headers: Vec<(&[u8], &[u8])> = p
                .headers
                .iter()
                .map(|(k, v)| (k.as_bytes(), v.as_bytes()))
                .collect();
            self.data = detector.scan(p.target.as_bytes(), &headers, &p.body).set;
        }
    }

    /// Puts the path in the policy's normal form, as the proxy does before
    /// it decides (`paths:`); `Err` is what the proxy refuses with `400`
    /// (rule `malformed-request`) before any rule is asked.
    pub fn apply_paths(&mut self, rules: &veto_policy::PathRules) -> Result<(), TargetError> {
        if !self.protocol.is_http() {
            return Ok(());
        }
        let normal = veto_policy::forward_target(&self.payload.target, rules)?;
        self.path = normalize_path(&normal).into_owned();
        Ok(())
    }

    /// The method this request overrides its own with (headers, query,
    /// a POST body), as the proxy reads it; `Err`: overrides disagree
    /// (the proxy's `400`).
    pub fn overridden(&self) -> Result<Option<String>, String> {
        if !self.protocol.is_http() {
            return Ok(None);
        }
        let headers: Vec<(&str, &str)> = self
            .payload
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        veto_proxy::parsers::described_override(
            &self.method,
            &headers,
            &self.payload.target,
            &self.payload.body,
        )
    }

    /// This request with another method.
    pub fn with_method(&self, method: &str) -> Sample {
        Sample {
            method: method.to_string(),
            ..self.clone()
        }
    }

    pub fn request(&self) -> Request<'_> {
        Request {
            machine: &self.machine,
            protocol: self.protocol,
            host: self.host.as_ref(),
            port: self.port,
            ips: &self.ips,
            method: &self.method,
            path: &self.path,
            data: self.data,
            now: self.now,
        }
    }
}

/// The path and query of an absolute URL as written (`/` when it has
/// none), without its fragment.
fn raw_target(url: &str) -> String {
    let after_scheme = url.find("://").map_or(url, |i| &url[i + 3..]);
    let rest = after_scheme
        .find(['/', '?', '#'])
        .map_or("", |i| &after_scheme[i..]);
    let rest = rest.split('#').next().unwrap_or("");
    match rest.as_bytes().first() {
        Some(b'/') => rest.to_string(),
        _ => format!("/{rest}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port() {
        assert_eq!(split_host_port("a.b:443"), Some(("a.b", 443)));
        assert_eq!(split_host_port("[::1]:22"), Some(("::1", 22)));
        assert_eq!(split_host_port("a.b"), None);
        assert_eq!(split_host_port("a.b:0"), None);
        assert_eq!(split_host_port("a.b:99999"), None);
    }

    #[test]
    fn urls() {
        let s = Sample::from_url(
            "m",
            "post",
            "https://API.Example.com./a/%2e%2e/b?x=1",
            Payload::default(),
        )
        .unwrap();
        assert_eq!(s.host, Host::Name("api.example.com".into()));
        assert_eq!(s.port, 443);
        assert_eq!(s.path, "/b");
        assert_eq!(s.method, "POST");
        let s = Sample::from_url("m", "GET", "http://0x7f.1:8080/", Payload::default()).unwrap();
        assert_eq!(s.host, Host::Ip("127.0.0.1".parse().unwrap()));
        assert_eq!(s.port, 8080);
        assert!(Sample::from_url("m", "GET", "ftp://x/", Payload::default()).is_err());
    }

    #[test]
    fn paths_as_the_proxy_forwards_them() {
        let rules = veto_policy::PathRules::default();
        let path = |url: &str| {
            let mut s = Sample::from_url("m", "GET", url, Payload::default()).unwrap();
            s.apply_paths(&rules).map(|()| s.path)
        };
        assert_eq!(path("http://a.test//admin/users").unwrap(), "/admin/users");
        assert_eq!(path("http://a.test/x//../admin").unwrap(), "/admin");
        assert_eq!(path("http://a.test/.//admin?q=1#f").unwrap(), "/admin");
        assert_eq!(path("http://a.test?q=1").unwrap(), "/");
        assert!(path("http://a.test/a%2Fadmin").is_err());
        assert!(path("http://a.test/a%zz").is_err());
        assert_eq!(raw_target("http://a.test"), "/");
        assert_eq!(raw_target("http://u@a.test:8080/p?q#f"), "/p?q");
    }
}
