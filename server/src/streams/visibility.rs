//! What a reader may see of what a read returns: derived streams only when the server keeps
//! them, and only the events of streams the caller may read.

use strata_auth::Operation;
use strata_engine::Engine;
use tonic::Status;

use crate::auth;

/// Refuses a derived stream (`$ce-…`, `$et-…`) when the server does not keep them, saying how
/// to turn them on (rather than answering as if the stream were empty).
pub fn derived_served(engine: &Engine, stream: &str) -> Result<(), Status> {
    if strata_engine::derived::is_derived(stream) && engine.config().derived.is_none() {
        return Err(crate::status::derived_streams_off(
            tonic::Code::FailedPrecondition,
            stream,
        ));
    }
    Ok(())
}

/// Leaves out the events `reader` may not read (each stream checked once per page).
pub fn readable_only(events: &mut Vec<strata_engine::RecordedEvent>, reader: &auth::Access) {
    let mut seen: std::collections::HashMap<String, bool> = Default::default();
    events.retain(|e| {
        if let Some(&ok) = seen.get(&e.stream) {
            return ok;
        }
        let ok = auth::may(reader, Operation::Read, &e.stream);
        seen.insert(e.stream.clone(), ok);
        ok
    });
}

/// Entries of a derived stream whose own stream `reader` may not read are shown as if their
/// event were gone (stream, revision and position only): reading `$ce-…` must not reveal
/// events of streams the caller may not read.
pub fn hide_unreadable(events: &mut [strata_engine::derived::DerivedEvent], reader: &auth::Access) {
    let mut seen: std::collections::HashMap<String, bool> = Default::default();
    for d in events.iter_mut().filter(|d| d.resolvable) {
        let ok = match seen.get(&d.event.stream) {
            Some(&ok) => ok,
            None => {
                let ok = auth::may(reader, Operation::Read, &d.event.stream);
                seen.insert(d.event.stream.clone(), ok);
                ok
            }
        };
        d.resolvable = ok;
    }
}
