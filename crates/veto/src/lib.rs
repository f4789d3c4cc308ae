//! The library behind the `veto` binary: the commands' logic, kept out of
//! `main.rs` so it can be tested and reused.

/// A line on stdout about what veto is doing, unless told to be quiet.
macro_rules! announce {
    ($args:expr, $($t:tt)*) => {
        if !$args.quiet {
            println!($($t)*);
        }
    };
}

pub mod access_cmd;
pub mod admin_client;
pub mod agent;
mod agent_grants;
pub mod audit_cmd;
pub mod bench;
pub mod exec;
pub mod explain;
pub mod firewall;
pub mod fleet_cmd;
pub mod grant_sync;
pub mod identity_sync;
mod listen;
pub mod machine_cmd;
pub mod netns;
mod proxy_creds;
pub mod run;
pub mod sample;
pub mod table;
pub mod tail;
pub mod testfile;
pub mod text;
