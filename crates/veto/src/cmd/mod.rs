//! The `veto` binary's command groups: each module holds a group's clap
//! arguments and its handler. These are the binary's own modules, not the
//! library's (`lib.rs`).

pub(crate) mod access;
pub(crate) mod args;
pub(crate) mod audit;
pub(crate) mod exec;
pub(crate) mod firewall;
pub(crate) mod fleet;
pub(crate) mod machine;
pub(crate) mod optout;
pub(crate) mod policy;
pub(crate) mod proxy;
