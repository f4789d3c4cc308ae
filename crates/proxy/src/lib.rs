//! veto's edge proxy: a standard HTTP proxy (absolute-URI requests and
//! CONNECT) that decides every request with the policy engine, records the
//! decision in the audit trail before answering, and refuses with a reason
//! people and programs can read.
//!
//! A request passes through named phases (`phase.rs`): identify, resolve,
//! inspect, decide, audit, answer. `phase::audit` is the one place a
//! decision record is written.

// Phases return the answer to give as their error: it is what the client
// hears, and boxing every early answer would only add allocations.
#![allow(clippy::result_large_err)]

pub mod answer;
mod coding;
pub mod config;
mod connect;
mod dial;
pub mod dns;
mod first_bytes;
mod forward;
mod guard;
mod head;
mod http;
mod idle;
mod inside;
pub mod inspect;
pub mod intercept;
mod loops;
pub mod metrics;
pub mod mtls;
pub mod owner;
mod phase;
mod redact;
mod refused;
pub mod resolve;
pub mod server;
pub mod sni;
mod splice;
pub mod state;
pub mod transparent;
mod tunnel_guard;

pub use config::{Config, parse_resolve};

/// The parsers that face the network, for fuzz targets and property tests
/// (`fuzz/`, `tests/parsers.rs`); not an interface of the proxy.
#[doc(hidden)]
pub mod parsers {
    pub use crate::coding::{Coding, decode as decode_body, encode as encode_body};
    pub use crate::guard::{chunked_end, head_verdict};
    pub use crate::head::{Start, body_method, described_override, http_start};
    pub use crate::sni::{Hello, MAX_HELLO, parse as client_hello, sample_hello};
}
pub use intercept::Interceptor;
pub use server::{Listeners, serve};
pub use state::{Active, Credentials, OwnedOptOut, Shared};
