//! `annals export`: the global log as JSON lines on stdout, then the stored outcomes of the
//! commands that committed no event (the format is in the [parent module](super)).
//!
//! The log is read a page at a time ([`super::PAGE_EVENTS`] events), and the outcomes a page
//! at a time too ([`PAGE_OUTCOMES`]), so memory stays bounded whatever the store's size; the
//! head is fixed when the store opens (the command holds the directory lock, so nothing else
//! writes). A command's fingerprint is looked up once per commit that carries a command id. A
//! reader that stops early (`annals export | head`) ends the export quietly with exit 0, as
//! other Unix filters do.
//!
//! Both backends list those outcomes in command-id order (bytes), so an export of either
//! imports into either.

use std::io::{self, BufWriter, Write};
use std::process::ExitCode;

use annals::codec::Value;
use annals::store::sled::IntegrityCheck;
use annals::store::StoredOutcome;
use annals::{CommandId, RecordedEvent};

use super::store::{self, Store};
use super::ExportArgs;
use crate::wire::cbor::{to_hex, Json};
use crate::wire::Envelope;

/// Bytes buffered before a write to stdout.
const OUTPUT_BUFFER_BYTES: usize = 256 * 1024;
/// Command outcomes read from the store per page.
const PAGE_OUTCOMES: usize = 1024;

/// Why writing stopped.
enum Stop {
    /// The reader went away: not an error.
    BrokenPipe,
    /// Anything else.
    Failed(anyhow::Error),
}

impl From<anyhow::Error> for Stop {
    fn from(e: anyhow::Error) -> Self {
        Stop::Failed(e)
    }
}

fn output(e: io::Error) -> Stop {
    if e.kind() == io::ErrorKind::BrokenPipe {
        Stop::BrokenPipe
    } else {
        Stop::Failed(anyhow::Error::new(e).context("cannot write to stdout"))
    }
}

pub(super) fn run(args: &ExportArgs) -> anyhow::Result<ExitCode> {
    let target = args.store.target()?;
    store::require_store(&target)?;
    let store = store::open(&target, IntegrityCheck::Structure)?;
    let stdout = io::stdout();
    let mut out = BufWriter::with_capacity(OUTPUT_BUFFER_BYTES, stdout.lock());
    let written = write_log(&store, &mut out).and_then(|events| {
        let outcomes = write_outcomes(&store, &mut out)?;
        out.flush().map_err(output)?;
        Ok((events, outcomes))
    });
    match written {
        Ok((events, outcomes)) => {
            store::close(&store, Ok(()))?;
            let place = store.place();
            let positions = super::positions(events);
            match store.sled() {
                Some(sled) => {
                    let recovery = super::verify::describe_recovery(sled.recovery_report());
                    eprintln!(
                        "annals export: wrote {events} events ({positions}) and {outcomes} \
                         command outcomes without events from {place}; recovery: {recovery}"
                    );
                }
                None => eprintln!(
                    "annals export: wrote {events} events ({positions}) and {outcomes} command \
                     outcomes without events from {place}"
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(Stop::BrokenPipe) => {
            store::close(&store, Ok(()))?;
            Ok(ExitCode::SUCCESS)
        }
        Err(Stop::Failed(e)) => store::close(&store, Err(e)),
    }
}

/// Writes every event of the log; returns how many.
fn write_log(store: &Store, out: &mut impl Write) -> Result<u64, Stop> {
    let mut fingerprints = Fingerprints::default();
    let mut failure = None;
    let scanned = super::scan_log(store, |event| {
        let fingerprint = fingerprints.of(store, event)?;
        match write_line(out, event, fingerprint.as_deref()) {
            Ok(()) => Ok(()),
            Err(stop) => {
                failure = Some(stop);
                Err(anyhow::anyhow!("stopped writing"))
            }
        }
    });
    match (scanned, failure) {
        (_, Some(stop)) => Err(stop),
        (Ok(events), None) => Ok(events),
        (Err(e), None) => Err(Stop::Failed(e)),
    }
}

/// Writes the stored outcome of every command that carried a command id and committed no event
/// (refused, or accepted without events), in command-id order; returns how many.
fn write_outcomes(store: &super::store::Store, out: &mut impl Write) -> Result<u64, Stop> {
    let place = store.place();
    let mut after: Option<CommandId> = None;
    let mut written = 0u64;
    loop {
        let page = store
            .outcomes_without_events(after.as_ref(), PAGE_OUTCOMES)
            .map_err(|e| Stop::Failed(super::read_error(place, e)))?;
        let last_page = page.len() < PAGE_OUTCOMES;
        for (id, stored) in &page {
            super::outcome::write(&mut *out, id, stored).map_err(|e| match e.io_error_kind() {
                Some(kind) => output(io::Error::from(kind)),
                None => Stop::Failed(anyhow::anyhow!(
                    "cannot export the outcome of command id {:?}: {e}",
                    id.as_str()
                )),
            })?;
            out.write_all(b"\n").map_err(output)?;
            written += 1;
        }
        match page.into_iter().next_back() {
            Some((id, _)) if !last_page => after = Some(id),
            _ => return Ok(written),
        }
    }
}

fn write_line(
    out: &mut impl Write,
    event: &RecordedEvent,
    fingerprint: Option<&str>,
) -> Result<(), Stop> {
    let data: Value = annals::codec::decode_plain(&event.payload.0).map_err(|e| {
        Stop::Failed(anyhow::anyhow!(
            "cannot export the event at position {} ({} version {}): its payload is not CBOR: {e}",
            event.position,
            event.stream,
            event.version
        ))
    })?;
    // An event line is the API's envelope, with the command's fingerprint.
    let line = Envelope {
        command_fingerprint: fingerprint.map(std::borrow::Cow::Borrowed),
        ..Envelope::of(event, Json(&data))
    };
    serde_json::to_writer(&mut *out, &line).map_err(|e| match e.io_error_kind() {
        Some(kind) => output(io::Error::from(kind)),
        None => Stop::Failed(anyhow::anyhow!(
            "cannot export the event at position {}: {e}",
            event.position
        )),
    })?;
    out.write_all(b"\n").map_err(output)
}

/// The fingerprint of the command of the commit being written, looked up once per commit.
#[derive(Default)]
struct Fingerprints {
    /// The last command id looked up and its fingerprint (hex), if its record names it.
    last: Option<(CommandId, Option<String>)>,
}

impl Fingerprints {
    fn of(&mut self, store: &Store, event: &RecordedEvent) -> anyhow::Result<Option<String>> {
        let Some(id) = &event.meta.command_id else {
            return Ok(None);
        };
        if let Some((last, fingerprint)) = &self.last {
            if last == id {
                return Ok(fingerprint.clone());
            }
        }
        let outcome = store
            .log()
            .command_outcome(id)
            .map_err(|e| super::read_error(store.place(), e))?;
        let fingerprint = match outcome {
            Some(StoredOutcome::Committed {
                fingerprint,
                events,
            }) if events.iter().any(|e| e.event_id == event.event_id) => {
                Some(to_hex(&fingerprint.0))
            }
            // Recovery re-derives the record of every commit with a command id, so this is
            // damage of the `commands` tree; the events themselves are intact.
            _ => {
                eprintln!(
                    "annals export: warning: the command-id record {:?} does not name its commit \
                     at position {}; exported without its fingerprint (a retry of that command \
                     on the imported store will be refused as a different command)",
                    id.as_str(),
                    event.position
                );
                None
            }
        };
        self.last = Some((id.clone(), fingerprint.clone()));
        Ok(fingerprint)
    }
}
