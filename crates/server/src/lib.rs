//! veto's control plane (`veto server`): it keeps policy versions, runtime
//! opt-outs, enrolled agents, the audit trail they ship and the change log,
//! in SQLite or PostgreSQL, and streams policy and opt-outs to agents that
//! dial out to it (`veto agent`). Agents open no inbound port.

pub mod store;

pub use store::{Location, Store, StoreError};
