//! The proxy's credential check: a snapshot of the machines in memory
//! (read from the identity store by `veto run`, from the config stream by
//! `veto agent`) and the uses noted since, so the request path touches no
//! disk and takes a lock only for the use map.

use std::sync::Arc;
use veto_identity::Uses;
use veto_proxy::Shared;

struct InUse {
    creds: veto_identity::Credentials,
    uses: Arc<Uses<String>>,
}

impl veto_proxy::Credentials for InUse {
    fn check(&self, machine: &str, token: &str, now: i64) -> Result<(), String> {
        // The use map may know of a later use than the snapshot.
        let recent = self.uses.get(machine);
        self.creds
            .check_used(machine, token, now, recent)
            .map_err(|r| r.to_string())?;
        self.uses.note(machine, now);
        Ok(())
    }

    fn registered_at(&self, machine: &str) -> Option<i64> {
        self.creds.get(machine).map(|c| c.created)
    }

    fn check_machine(&self, machine: &str, now: i64) -> Result<(), String> {
        let recent = self.uses.get(machine);
        self.creds
            .check_machine(machine, now, recent)
            .map_err(|r| match r {
                veto_identity::Refusal::UnknownMachine => format!(
                    "The client certificate names machine `{machine}`, which is not registered."
                ),
                other => other.to_string(),
            })?;
        self.uses.note(machine, now);
        Ok(())
    }
}

/// Puts a snapshot of the machines in force for the proxy's next request.
pub(crate) fn install(
    shared: &Shared,
    creds: veto_identity::Credentials,
    uses: &Arc<Uses<String>>,
) {
    let boxed: Box<dyn veto_proxy::Credentials> = Box::new(InUse {
        creds,
        uses: uses.clone(),
    });
    shared.credentials.store(Arc::new(boxed));
}
