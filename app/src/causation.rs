//! The causation index behind the console's chain view (`GET /v1/console/chain/{event_id}`):
//! a projection that records, for the events of the reference domain (customers and orders),
//! where each event is (event id → position), which events each one caused (causing id →
//! positions) and which events share a correlation id (correlation id → positions).
//!
//! A saga's commands carry the triggering event's id as their causation id and the business
//! transaction's correlation id, so from any event the chain is found by walking up its
//! causes to the root, then down to everything the root caused, plus everything of the same
//! correlation. Every walk and every list is bounded ([`CHAIN_EVENTS_MAX`],
//! [`LIST_POSITIONS_MAX`]); the benchmark's accounts are not indexed (they have no sagas, and
//! the index would cost them a record per event).

use annals::{
    HandlerError, Position, Projection, RecordedEvent, Runtime, SubscribeError, SubscriberOptions,
    View, ViewError, ViewSet,
};
use std::collections::{BTreeSet, VecDeque};

/// The projection's name.
pub const CAUSATION: &str = "causation";
/// Most events in one chain (`GET /v1/console/chain/{event_id}` pages through them).
pub const CHAIN_EVENTS_MAX: usize = 10_000;
/// Most positions kept per causing event or per correlation id (the first ones).
pub const LIST_POSITIONS_MAX: usize = 1000;
/// Most causes walked up from an event.
const DEPTH_MAX: usize = 64;

const BY_EVENT: &str = "by-event";
const CAUSED: &str = "caused";
const CORRELATED: &str = "correlated";

/// The projection. See the [module docs](self).
#[derive(Debug)]
pub struct CausationIndex {
    by_event: View<u64>,
    caused: View<Vec<u64>>,
    correlated: View<Vec<u64>>,
}

impl CausationIndex {
    fn new(views: &ViewSet) -> Result<CausationIndex, ViewError> {
        Ok(CausationIndex {
            by_event: views.view(BY_EVENT)?,
            caused: views.view(CAUSED)?,
            correlated: views.view(CORRELATED)?,
        })
    }
}

/// Appends `position` to a bounded list (once).
fn push(list: Option<Vec<u64>>, position: u64) -> Option<Vec<u64>> {
    let mut list = list.unwrap_or_default();
    if list.len() < LIST_POSITIONS_MAX && !list.contains(&position) {
        list.push(position);
    }
    Some(list)
}

impl Projection for CausationIndex {
    fn handle(&mut self, event: &RecordedEvent) -> Result<(), HandlerError> {
        let at = event.position;
        let id = event.event_id.to_string();
        self.by_event.update(id.as_bytes(), at, |_| Some(at.0))?;
        if let Some(cause) = &event.meta.causation_id {
            self.caused
                .update(cause.as_bytes(), at, |list| push(list, at.0))?;
        }
        if let Some(correlation) = &event.meta.correlation_id {
            self.correlated
                .update(correlation.as_bytes(), at, |list| push(list, at.0))?;
        }
        Ok(())
    }
}

/// Registers the index on `runtime`, reading the aggregate types `aggregate_types`.
pub fn register(runtime: &Runtime, aggregate_types: &[&str]) -> Result<(), SubscribeError> {
    let options =
        SubscriberOptions::default().with_aggregate_types(aggregate_types.iter().copied());
    runtime.project(CAUSATION, options, CausationIndex::new)
}

/// The positions of the chain of the event `event_id`, in log order (at most
/// [`CHAIN_EVENTS_MAX`], and whether there were more), or `None` if the index does not hold
/// the event (not indexed yet, or of a type it does not index). `read` gives the stored
/// event at a position (for its causation and correlation ids).
pub fn chain(
    runtime: &Runtime,
    event_id: &str,
    read: &dyn Fn(Position) -> Result<Option<RecordedEvent>, String>,
) -> Result<Option<(Vec<u64>, bool)>, String> {
    let view = |name: &str| {
        runtime
            .view::<u64>(CAUSATION, name)
            .map_err(|e| e.to_string())
    };
    let lists = |name: &str| {
        runtime
            .view::<Vec<u64>>(CAUSATION, name)
            .map_err(|e| e.to_string())
    };
    let (by_event, caused, correlated) = (view(BY_EVENT)?, lists(CAUSED)?, lists(CORRELATED)?);
    let position_of = |id: &str| by_event.get(id.as_bytes()).map_err(|e| e.to_string());
    let Some(start) = position_of(event_id)? else {
        return Ok(None);
    };
    // Up to the root: each cause that is an indexed event.
    let mut root = start;
    for _ in 0..DEPTH_MAX {
        let Some(event) = read(Position(root))? else {
            break;
        };
        let Some(cause) = event.meta.causation_id.as_deref() else {
            break;
        };
        match position_of(cause)? {
            Some(parent) if parent != root => root = parent,
            _ => break,
        }
    }
    // Down from the root, breadth first; and the start's correlation.
    let mut found = BTreeSet::from([root, start]);
    let mut truncated = false;
    let mut queue = VecDeque::from([root]);
    while let Some(position) = queue.pop_front() {
        let Some(event) = read(Position(position))? else {
            continue;
        };
        let children = caused
            .get(event.event_id.to_string().as_bytes())
            .map_err(|e| e.to_string())?
            .unwrap_or_default();
        for child in children {
            if found.len() >= CHAIN_EVENTS_MAX {
                truncated = true;
                break;
            }
            if found.insert(child) {
                queue.push_back(child);
            }
        }
    }
    if let Some(event) = read(Position(start))? {
        if let Some(correlation) = event.meta.correlation_id.as_deref() {
            let members = correlated
                .get(correlation.as_bytes())
                .map_err(|e| e.to_string())?
                .unwrap_or_default();
            for member in members {
                if found.len() >= CHAIN_EVENTS_MAX {
                    truncated = true;
                    break;
                }
                found.insert(member);
            }
        }
    }
    Ok(Some((found.into_iter().collect(), truncated)))
}
