//! `annals import`: the JSON lines of `annals export` from stdin into an empty store (the
//! format, and what it does not carry, are in the [parent module](super)).
//!
//! Event lines come first and are appended as commits (below); the command outcome lines that
//! follow them (`"kind":"outcome"`, see `outcome.rs`) are restored once every commit is
//! acknowledged, one record each, at the version the line names: on sled beside the journal (the
//! import holds the directory, so nothing else writes), on PostgreSQL in the command table. An
//! outcome line must be in command-id order (so each id appears once,
//! checked without remembering them), name a stream version the imported events reached, and
//! use a command id no imported commit uses. An export without outcome lines (written before
//! they existed) imports as it did.
//!
//! # How
//! Each line is parsed and checked on its own (fields, ids, `recorded_at`, the payload turned
//! back into CBOR), then against what came before: its position must be the next one, and a
//! line that does not continue the commit being gathered starts a new one, whose first
//! version must follow its stream's head and whose time must not go back. A commit is
//! appended as one [`AppendRequest`] as soon as the next line shows it is complete. Appends are
//! pipelined — up to [`IN_FLIGHT_APPENDS_MAX`] appends or [`IN_FLIGHT_BYTES_MAX`] bytes wait
//! for their acknowledgement at once, so the journal groups them into large batches with one
//! fsync each — and every acknowledgement is checked to have placed the commit at the
//! position and version the input says.
//!
//! # Bounded memory
//! One line (at most [`LINE_BYTES_MAX`] bytes), one commit being gathered (at most
//! [`COMMIT_EVENTS_MAX`] events and [`COMMIT_BYTES_MAX`] payload bytes: a longer run of lines
//! without a command id is split into several commits, one with a command id is refused), and
//! the appends in flight with the heads of their streams. The head of any other stream is read
//! from the store, which has acknowledged everything about it. Event ids are not checked for
//! uniqueness: that would need memory for every id.
//!
//! # Failure
//! The first bad line, or a refused append, stops the import. The commit being gathered is
//! dropped (the bad line may belong to it), the appends in flight are awaited, and the error
//! says which events were imported: always whole commits, positions 1 to some P.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{self, BufRead};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use annals::codec::Value;
use annals::envelope::{EncodedPayload, TRACE_ID_LEN_MAX};
use annals::store::sled::IntegrityCheck;
use annals::store::state::CHECKPOINTS;
use annals::store::{
    AppendError, AppendKind, AppendRequest, AppendTicket, CommandKey, Fingerprint, PendingEvent,
};
use annals::{CommandId, CommitMeta, Position, StreamId, Timestamp, Version};
use anyhow::Context as _;

use crate::wire::cbor::{from_json, unhex};
use crate::wire::time::format as rfc3339;
use crate::wire::Envelope;

use super::outcome::{self, Restored};
use super::store::{self, Store, Target};
use super::ImportArgs;

/// Longest input line, in bytes. Far above an event at the runtime's default limits (64 KiB of
/// payload, which as JSON is at most about twice as long); bounds the memory one line takes.
const LINE_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Most events in one imported commit (the runtime's default is 100 per command).
const COMMIT_EVENTS_MAX: usize = 10_000;
/// Most payload bytes in one imported commit: the journal's default batch size.
const COMMIT_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Most appends waiting for their acknowledgement: enough for the journal to build batches of
/// its default size (2,048 appends), few enough to bound memory.
const IN_FLIGHT_APPENDS_MAX: usize = 4096;
/// Most payload bytes in the appends waiting for their acknowledgement.
const IN_FLIGHT_BYTES_MAX: usize = 64 * 1024 * 1024;
/// What a command's fingerprint is computed from when a line has a command id but no
/// fingerprint (input not written by `annals export`): no real command has it, so a retry of
/// the command is refused as a different command rather than wrongly taken for a retry.
const UNKNOWN_FINGERPRINT_SOURCE: &[u8] = b"annals import: the input carried no fingerprint";

/// One input line as written by `annals export`: the wire's envelope, its payload parsed into
/// a CBOR value directly (keeping the order of object keys). Every member must be present; the
/// optional ones may be `null` (`command_fingerprint` may also be absent).
type Line = Envelope<'static, Value>;

/// A line, checked on its own.
struct Event {
    line: u64,
    stream: StreamId,
    version: Version,
    position: Position,
    meta: CommitMeta,
    fingerprint: Option<Fingerprint>,
    pending: PendingEvent,
}

impl Event {
    fn from_line(line_no: u64, line: Line) -> Result<Event, String> {
        let stream = StreamId::new(line.aggregate.into_owned(), line.id.into_owned())
            .map_err(|e| e.to_string())?;
        if line.version == 0 {
            return Err("version 0: versions start at 1".into());
        }
        if line.position == 0 {
            return Err("position 0: positions start at 1".into());
        }
        if line.event_type.is_empty() {
            return Err("the event type is empty".into());
        }
        let recorded_at = line.recorded_at.0;
        let command_id = line
            .command_id
            .map(|id| CommandId::new(id.into_owned()))
            .transpose()
            .map_err(|e| e.to_string())?;
        let fingerprint = match (&command_id, line.command_fingerprint) {
            (None, None) => None,
            (None, Some(_)) => return Err("a command_fingerprint without a command_id".into()),
            (Some(_), Some(hex)) => Some(parse_fingerprint(&hex)?),
            (Some(_), None) => Some(Fingerprint::of(&stream, UNKNOWN_FINGERPRINT_SOURCE)),
        };
        for (what, id) in [
            ("correlation_id", &line.correlation_id),
            ("causation_id", &line.causation_id),
        ] {
            if id
                .as_ref()
                .is_some_and(|id| id.is_empty() || id.len() > TRACE_ID_LEN_MAX)
            {
                return Err(format!("{what} must be 1 to {TRACE_ID_LEN_MAX} bytes"));
            }
        }
        let data = from_json(line.data).map_err(|e| format!("data: {e}"))?;
        let payload =
            annals::codec::encode_plain("payload", &data).map_err(|e| format!("data: {e}"))?;
        Ok(Event {
            line: line_no,
            stream,
            version: Version(line.version),
            position: Position(line.position),
            meta: CommitMeta {
                recorded_at,
                command_id,
                correlation_id: line.correlation_id.map(Arc::from),
                causation_id: line.causation_id.map(Arc::from),
            },
            fingerprint,
            pending: PendingEvent {
                event_id: line.event_id,
                event_type: Arc::from(line.event_type),
                schema_version: line.schema_version,
                payload: EncodedPayload(payload),
            },
        })
    }
}

fn parse_fingerprint(hex: &str) -> Result<Fingerprint, String> {
    unhex(hex)
        .ok()
        .and_then(|bytes| <[u8; 16]>::try_from(bytes).ok())
        .map(Fingerprint)
        .ok_or_else(|| format!("command_fingerprint {hex:?} is not 32 hex digits"))
}

/// The events of one commit being gathered.
struct Commit {
    stream: StreamId,
    meta: CommitMeta,
    fingerprint: Option<Fingerprint>,
    first_version: Version,
    first_position: Position,
    first_line: u64,
    last_line: u64,
    events: Vec<PendingEvent>,
    bytes: usize,
}

impl Commit {
    fn new(event: Event) -> Commit {
        Commit {
            stream: event.stream,
            meta: event.meta,
            fingerprint: event.fingerprint,
            first_version: event.version,
            first_position: event.position,
            first_line: event.line,
            last_line: event.line,
            bytes: event.pending.payload.0.len(),
            events: vec![event.pending],
        }
    }

    fn next_version(&self) -> Version {
        self.first_version.advance(self.events.len() as u64)
    }

    /// Whether `event` is the next event of this commit (same stream, metadata, fingerprint).
    fn continues(&self, event: &Event) -> bool {
        event.stream == self.stream
            && event.meta == self.meta
            && event.fingerprint == self.fingerprint
            && event.version == self.next_version()
    }

    fn has_room_for(&self, event: &Event) -> bool {
        self.events.len() < COMMIT_EVENTS_MAX
            && self.bytes + event.pending.payload.0.len() <= COMMIT_BYTES_MAX
    }

    fn push(&mut self, event: Event) {
        self.last_line = event.line;
        self.bytes += event.pending.payload.0.len();
        self.events.push(event.pending);
    }
}

/// An append waiting for its acknowledgement.
struct InFlight {
    ticket: AppendTicket,
    seq: u64,
    stream: StreamId,
    command_id: Option<CommandId>,
    first_position: Position,
    last_version: Version,
    events: u64,
    bytes: usize,
    first_line: u64,
    last_line: u64,
}

/// The head of a stream with appends in flight.
struct Tail {
    version: Version,
    recorded_at: Timestamp,
    /// The sequence number of its last append in flight.
    seq: u64,
}

/// What has been imported and acknowledged.
#[derive(Debug, Default, Clone, Copy)]
struct Done {
    events: u64,
    commits: u64,
    last_position: Position,
    /// Command outcomes restored.
    outcomes: u64,
    /// The last input line of the last commit acknowledged or outcome restored.
    through_line: u64,
}

/// Why the import stopped.
enum Failure {
    /// A bad input line (or an unreadable input).
    Input { line: u64, reason: String },
    /// The store refused or misplaced the commit of these lines.
    Store {
        first_line: u64,
        last_line: u64,
        reason: String,
    },
    /// The store failed outside an append.
    Read(String),
    /// The store refused to restore the command outcome of this line.
    Restore { line: u64, reason: String },
}

struct Importer<'a> {
    store: &'a Store,
    /// The position the next line must have.
    next_position: Position,
    commit: Option<Commit>,
    in_flight: VecDeque<InFlight>,
    in_flight_bytes: usize,
    /// The heads of the streams with appends in flight.
    tails: HashMap<StreamId, Tail>,
    /// The command ids of the appends in flight.
    ids_in_flight: HashSet<CommandId>,
    seq: u64,
    /// The command id of the last outcome line restored; `Some` once the outcome lines have
    /// begun (no event line may follow).
    last_outcome: Option<CommandId>,
    done: Done,
}

impl<'a> Importer<'a> {
    fn new(store: &'a Store) -> Importer<'a> {
        Importer {
            store,
            next_position: store.log().head_position().next(),
            commit: None,
            in_flight: VecDeque::new(),
            in_flight_bytes: 0,
            tails: HashMap::new(),
            ids_in_flight: HashSet::new(),
            seq: 0,
            last_outcome: None,
            done: Done::default(),
        }
    }

    /// Reads, checks and appends every line of `input`, then waits for every append.
    fn run(&mut self, input: &mut impl BufRead) -> Result<(), Failure> {
        let mut buf = Vec::new();
        let mut line_no = 0u64;
        loop {
            line_no += 1;
            let read = read_line(input, &mut buf).map_err(|e| Failure::Input {
                line: line_no,
                reason: format!("cannot read the input: {e}"),
            })?;
            match read {
                Read::End => break,
                Read::TooLong => {
                    return Err(Failure::Input {
                        line: line_no,
                        reason: format!("longer than {LINE_BYTES_MAX} bytes"),
                    })
                }
                Read::Line if buf.iter().all(u8::is_ascii_whitespace) => continue,
                Read::Line => {}
            }
            let bad = |reason: String| Failure::Input {
                line: line_no,
                reason,
            };
            if outcome::is_outcome(&buf).map_err(bad)? {
                let restored = outcome::parse(&buf).map_err(bad)?;
                self.restore(line_no, restored)?;
                continue;
            }
            if self.last_outcome.is_some() {
                return Err(bad(
                    "an event after command outcome lines: the events come first, in position \
                     order, then the outcomes"
                        .into(),
                ));
            }
            let event = parse(line_no, &buf)?;
            self.add(event)?;
        }
        if let Some(commit) = self.commit.take() {
            self.submit(commit)?;
        }
        self.settle_all()
    }

    /// Waits for every append in flight.
    fn settle_all(&mut self) -> Result<(), Failure> {
        while !self.in_flight.is_empty() {
            self.settle_oldest()?;
        }
        Ok(())
    }

    fn add(&mut self, event: Event) -> Result<(), Failure> {
        let bad = |reason: String| Failure::Input {
            line: event.line,
            reason,
        };
        if event.position != self.next_position {
            return Err(bad(if event.position < self.next_position {
                format!(
                    "position {} comes after position {}: lines must be in position order",
                    event.position,
                    self.next_position.0 - 1
                )
            } else {
                format!(
                    "position {} where position {} belongs: positions run from 1 without gaps",
                    event.position, self.next_position
                )
            }));
        }
        let continues = self
            .commit
            .as_ref()
            .map(|c| (c.continues(&event), c.has_room_for(&event)));
        match continues {
            Some((true, true)) => {
                self.next_position = self.next_position.next();
                if let Some(commit) = &mut self.commit {
                    commit.push(event);
                }
                return Ok(());
            }
            Some((true, false)) if event.meta.command_id.is_some() => {
                return Err(bad(format!(
                    "the commit of command id {} has more than {COMMIT_EVENTS_MAX} events or \
                     {COMMIT_BYTES_MAX} payload bytes, more than an import appends atomically",
                    event.meta.command_id.as_ref().map_or("", CommandId::as_str)
                )));
            }
            _ => {}
        }
        if let Some(commit) = self.commit.take() {
            self.submit(commit)?;
        }
        self.start(event)?;
        self.next_position = self.next_position.next();
        Ok(())
    }

    /// Starts a commit with `event`, which must follow its stream's head.
    fn start(&mut self, event: Event) -> Result<(), Failure> {
        let (head, last_recorded_at) = self.head_of(&event.stream)?;
        let bad = |reason: String| Failure::Input {
            line: event.line,
            reason,
        };
        if event.version != head.next() {
            return Err(bad(format!(
                "{} version {} does not follow version {head}: the versions of a stream run \
                 from 1 without gaps",
                event.stream, event.version
            )));
        }
        if let Some(at) = last_recorded_at.filter(|&at| event.meta.recorded_at < at) {
            return Err(bad(format!(
                "recorded_at {} is earlier than that of {} version {head} ({}): time never \
                 goes back within a stream",
                rfc3339(event.meta.recorded_at),
                event.stream,
                rfc3339(at)
            )));
        }
        if let Some(id) = &event.meta.command_id {
            let used = self.ids_in_flight.contains(id)
                || self
                    .store
                    .log()
                    .command_outcome(id)
                    .map_err(|e| Failure::Read(e.to_string()))?
                    .is_some();
            if used {
                return Err(bad(format!(
                    "command id {:?} is used by an earlier commit: a command id names one command",
                    id.as_str()
                )));
            }
        }
        self.commit = Some(Commit::new(event));
        Ok(())
    }

    /// Restores the command outcome of input line `line`, once every commit before it is
    /// acknowledged (the first outcome line waits for them).
    fn restore(&mut self, line: u64, restored: Restored) -> Result<(), Failure> {
        let bad = |reason: String| Failure::Input { line, reason };
        match &self.last_outcome {
            Some(last) if restored.id.as_str() <= last.as_str() => {
                return Err(bad(format!(
                    "command id {:?} comes after {:?}: outcome lines are in command-id order, \
                     each id once",
                    restored.id.as_str(),
                    last.as_str()
                )));
            }
            Some(_) => {}
            None => {
                if let Some(commit) = self.commit.take() {
                    self.submit(commit)?;
                }
                self.settle_all()?;
            }
        }
        let (head, _) = self.head_of(&restored.stream)?;
        if restored.version > head {
            return Err(bad(format!(
                "{} is at version {head}, but the outcome of command id {:?} was recorded at \
                 version {}: an outcome follows the events of its stream",
                restored.stream,
                restored.id.as_str(),
                restored.version
            )));
        }
        // Recorded as it was, at its version: on sled beside the journal, on PostgreSQL in
        // the command table (the import is the only writer).
        self.store
            .restore_outcome(&restored.id, &restored.outcome)
            .map_err(|e| match e {
                AppendError::CommandIdUsed { id, .. } => bad(format!(
                    "command id {:?} is used by an imported commit: a command id names one \
                     command",
                    id.as_str()
                )),
                e => Failure::Restore {
                    line,
                    reason: e.to_string(),
                },
            })?;
        self.last_outcome = Some(restored.id);
        self.done.outcomes += 1;
        self.done.through_line = line;
        Ok(())
    }

    /// The stream's version and the time of its last event.
    fn head_of(&self, stream: &StreamId) -> Result<(Version, Option<Timestamp>), Failure> {
        if let Some(tail) = self.tails.get(stream) {
            return Ok((tail.version, Some(tail.recorded_at)));
        }
        // No append of this stream is in flight: the store knows its head.
        let read = |e: annals::store::StoreError| Failure::Read(e.to_string());
        let head = self.store.log().stream_head(stream).map_err(read)?;
        if head == Version(0) {
            return Ok((head, None));
        }
        let last = self
            .store
            .log()
            .read_stream(stream, head, Some(head), 1)
            .map_err(read)?;
        Ok((head, last.first().map(|e| e.meta.recorded_at)))
    }

    fn submit(&mut self, commit: Commit) -> Result<(), Failure> {
        let last_version = Version(commit.next_version().0 - 1);
        let command = commit
            .meta
            .command_id
            .clone()
            .zip(commit.fingerprint)
            .map(|(id, fingerprint)| CommandKey { id, fingerprint });
        let events = commit.events.len() as u64;
        let ticket = self.store.log().append(AppendRequest {
            stream: commit.stream.clone(),
            expected: Version(commit.first_version.0 - 1),
            meta: commit.meta.clone(),
            command,
            kind: AppendKind::Events(commit.events),
        });
        self.seq += 1;
        self.tails.insert(
            commit.stream.clone(),
            Tail {
                version: last_version,
                recorded_at: commit.meta.recorded_at,
                seq: self.seq,
            },
        );
        if let Some(id) = &commit.meta.command_id {
            self.ids_in_flight.insert(id.clone());
        }
        self.in_flight_bytes += commit.bytes;
        self.in_flight.push_back(InFlight {
            ticket,
            seq: self.seq,
            stream: commit.stream,
            command_id: commit.meta.command_id,
            first_position: commit.first_position,
            last_version,
            events,
            bytes: commit.bytes,
            first_line: commit.first_line,
            last_line: commit.last_line,
        });
        while self.in_flight.len() > IN_FLIGHT_APPENDS_MAX
            || self.in_flight_bytes > IN_FLIGHT_BYTES_MAX
        {
            self.settle_oldest()?;
        }
        Ok(())
    }

    /// Waits for the oldest append and checks where it was placed.
    fn settle_oldest(&mut self) -> Result<(), Failure> {
        let Some(append) = self.in_flight.pop_front() else {
            return Ok(());
        };
        self.in_flight_bytes -= append.bytes;
        let failed = |reason: String| Failure::Store {
            first_line: append.first_line,
            last_line: append.last_line,
            reason,
        };
        let receipt = futures::executor::block_on(append.ticket)
            .map_err(|e| failed(format!("the store refused it: {e}")))?;
        if receipt.first_position != Some(append.first_position)
            || receipt.version != append.last_version
        {
            return Err(failed(format!(
                "the store placed it at position {:?} up to version {} instead of position {} \
                 up to version {}",
                receipt.first_position, receipt.version, append.first_position, append.last_version
            )));
        }
        self.done = Done {
            events: self.done.events + append.events,
            commits: self.done.commits + 1,
            last_position: append.first_position.advance(append.events - 1),
            outcomes: self.done.outcomes,
            through_line: append.last_line,
        };
        if self
            .tails
            .get(&append.stream)
            .is_some_and(|t| t.seq == append.seq)
        {
            self.tails.remove(&append.stream);
        }
        if let Some(id) = &append.command_id {
            self.ids_in_flight.remove(id);
        }
        Ok(())
    }

    /// After a failure: waits for the appends still in flight without counting them (they
    /// follow the failure); returns how many the store nonetheless committed.
    fn abandon_in_flight(&mut self) -> usize {
        self.in_flight
            .drain(..)
            .map(|append| futures::executor::block_on(append.ticket))
            .filter(Result::is_ok)
            .count()
    }
}

fn parse(line_no: u64, text: &[u8]) -> Result<Event, Failure> {
    let bad = |reason: String| Failure::Input {
        line: line_no,
        reason,
    };
    let line: Line = serde_json::from_slice(text).map_err(|e| {
        // serde_json's positions count lines inside the text; keep only the column.
        let message = e.to_string();
        let suffix = format!(" at line {} column {}", e.line(), e.column());
        let message = message.strip_suffix(&suffix).unwrap_or(&message);
        let what = if e.is_data() {
            "not an exported event"
        } else {
            "not valid JSON"
        };
        bad(format!("{what} (column {}): {message}", e.column()))
    })?;
    Event::from_line(line_no, line).map_err(bad)
}

enum Read {
    Line,
    TooLong,
    End,
}

/// Reads one line (without its `\n`) into `buf`, at most [`LINE_BYTES_MAX`] bytes of it.
fn read_line(input: &mut impl BufRead, buf: &mut Vec<u8>) -> io::Result<Read> {
    buf.clear();
    loop {
        let available = match input.fill_buf() {
            Ok(available) => available,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            return Ok(if buf.is_empty() {
                Read::End
            } else {
                Read::Line
            });
        }
        let (chunk, used, ends) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (&available[..i], i + 1, true),
            None => (available, available.len(), false),
        };
        if buf.len() + chunk.len() > LINE_BYTES_MAX {
            return Ok(Read::TooLong);
        }
        buf.extend_from_slice(chunk);
        input.consume(used);
        if ends {
            return Ok(Read::Line);
        }
    }
}

pub(super) fn run(args: &ImportArgs) -> anyhow::Result<ExitCode> {
    let target = args.store.target()?;
    if let Target::Sled(dir) = &target {
        prepare_target(dir)?;
    }
    let store = store::open(&target, IntegrityCheck::Structure)?;
    if let Err(e) = require_empty(&store) {
        return store::close(&store, Err(e));
    }
    let mut importer = Importer::new(&store);
    let result = match importer.run(&mut io::stdin().lock()) {
        // The appends in flight are whole commits before the bad line: they count as imported
        // (unless the store fails them, which then is the error to report).
        Err(failure @ (Failure::Input { .. } | Failure::Read(_))) => {
            importer.settle_all().and(Err(failure))
        }
        other => other,
    };
    let stray = if result.is_err() {
        importer.abandon_in_flight()
    } else {
        0
    };
    let done = importer.done;
    let outcome = match result {
        Ok(()) => {
            println!(
                "annals import: imported {} events in {} ({}) and {} command outcomes without \
                 events into {}",
                done.events,
                commits(done.commits),
                super::positions(done.last_position.0),
                done.outcomes,
                store.place()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(failure) => Err(explain(&store, &failure, done, stray)),
    };
    store::close(&store, outcome)
}

/// The error message of a failed import: what went wrong, and what was imported.
fn explain(store: &Store, failure: &Failure, done: Done, stray: usize) -> anyhow::Error {
    let shown = store.place();
    let empty_it = store.how_to_empty();
    let what = match failure {
        Failure::Input { line, reason } => format!("line {line}: {reason}"),
        Failure::Store {
            first_line,
            last_line,
            reason,
        } => format!("cannot import the commit of lines {first_line} to {last_line}: {reason}"),
        Failure::Read(reason) => format!("cannot read the store being imported into: {reason}"),
        Failure::Restore { line, reason } => {
            format!("cannot restore the command outcome of line {line}: {reason}")
        }
    };
    let imported = if done.events == 0 && done.outcomes == 0 {
        format!("nothing was imported: {shown} holds an empty store, which can be imported into")
    } else {
        format!(
            "imported {} events in {} (positions 1 to {}) and {} command outcomes (input lines \
             1 to {}) into {shown}; nothing after line {}. Fix the input, {empty_it} and \
             import again",
            done.events,
            commits(done.commits),
            done.last_position,
            done.outcomes,
            done.through_line,
            done.through_line
        )
    };
    let stray = if stray > 0 {
        format!(
            "\nwarning: {stray} commits queued after the failure were written anyway: {shown} \
             is not a faithful prefix of the input; {empty_it}"
        )
    } else {
        String::new()
    };
    anyhow::anyhow!("{what}\n{imported}{stray}")
}

fn commits(n: u64) -> String {
    if n == 1 {
        "1 commit".into()
    } else {
        format!("{n} commits")
    }
}

/// Creates `dir` if it is missing; refuses one that holds anything but an Annals store.
fn prepare_target(dir: &Path) -> anyhow::Result<()> {
    let shown = dir.display();
    match std::fs::metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the directory {shown}")),
        Err(e) => Err(super::usage(format!("{shown}: {e}"))),
        Ok(meta) if !meta.is_dir() => Err(super::usage(format!("{shown} is not a directory"))),
        Ok(_) if store::holds_database(dir) => Ok(()),
        Ok(_) => {
            let mut entries = std::fs::read_dir(dir)
                .with_context(|| format!("cannot list the directory {shown}"))?;
            if entries.next().is_some() {
                Err(super::usage(format!(
                    "{shown} is not empty and holds no Annals store: import writes only into a \
                     new or empty directory"
                )))
            } else {
                Ok(())
            }
        }
    }
}

/// Refuses a store with any event or record: on sled any entry of any tree (its `meta` tree
/// aside, which opening writes); on PostgreSQL, whose store cannot list its records, any event
/// or subscriber checkpoint.
fn require_empty(store: &Store) -> anyhow::Result<()> {
    let head = store.log().head_position();
    let Some(sled) = store.sled() else {
        let checkpoints = store
            .state()
            .range(
                CHECKPOINTS,
                std::ops::Bound::Unbounded,
                std::ops::Bound::Unbounded,
                1,
            )
            .map_err(|e| super::read_error(store.place(), e))?;
        if head == Position(0) && checkpoints.is_empty() {
            return Ok(());
        }
        return Err(super::usage(format!(
            "{} already holds an Annals store with {head} events{}: import only into a schema \
             without events",
            store.place(),
            if checkpoints.is_empty() {
                ""
            } else {
                " and subscriber checkpoints"
            }
        )));
    };
    let mut holding = Vec::new();
    for name in sled.database().tree_names() {
        if name.as_ref() == b"meta" {
            continue;
        }
        let entries = sled.database().open_tree(&name)?.len();
        if entries > 0 {
            holding.push(format!("{} {entries}", String::from_utf8_lossy(&name)));
        }
    }
    if head == Position(0) && holding.is_empty() {
        return Ok(());
    }
    Err(super::usage(format!(
        "{} already holds an Annals store with {} events (records in trees: {}): import only \
         into a new or empty directory",
        store.place(),
        head,
        holding.join(", ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = r#"{"event_id":"67e55044-10b1-426f-9247-bb680e5fe0c8","aggregate":"Order","id":"o-1","version":1,"position":1,"type":"OrderCreated","schema_version":2,"recorded_at":"2024-05-01T12:00:00.000001Z","command_id":"k-1","command_fingerprint":"000102030405060708090a0b0c0d0e0f","correlation_id":null,"causation_id":null,"data":{"type":"OrderCreated","total":5}}"#;

    fn parsed(text: &str) -> Result<Event, String> {
        parse(7, text.as_bytes()).map_err(|f| match f {
            Failure::Input { line, reason } => format!("line {line}: {reason}"),
            _ => "not an input failure".into(),
        })
    }

    #[test]
    fn an_exported_line_parses_with_every_field() {
        let event = parsed(LINE).expect("valid");
        assert_eq!(event.stream.to_string(), "Order/o-1");
        assert_eq!((event.version, event.position), (Version(1), Position(1)));
        assert_eq!(event.meta.recorded_at, Timestamp(1_714_564_800_000_001));
        assert_eq!(
            event.meta.command_id.as_ref().map(CommandId::as_str),
            Some("k-1")
        );
        assert_eq!(event.fingerprint.map(|f| f.0[15]), Some(15));
        let data: Value = annals::codec::decode_plain(&event.pending.payload.0).expect("CBOR");
        assert!(
            matches!(data, Value::Map(ref m) if m.len() == 2),
            "{data:?}"
        );
    }

    #[test]
    fn bad_lines_say_what_is_wrong() {
        let cases = [
            (
                LINE.replace(r#","causation_id":null"#, ""),
                "missing field `causation_id`",
            ),
            (
                LINE.replace(r#""version":1"#, r#""version":"1""#),
                "invalid type",
            ),
            (
                LINE.replace(r#""version":1"#, r#""version":0"#),
                "version 0",
            ),
            (LINE.replace("2024-05-01T", "2024-05-32T"), "recorded_at"),
            (LINE.replace(r#""id":"o-1""#, r#""id":"""#), "aggregate id"),
            (
                LINE.replace(r#""command_id":"k-1""#, r#""command_id":null"#),
                "without a command_id",
            ),
            (LINE.replace("0e0f", "0e"), "32 hex digits"),
            (
                LINE.replace(r#""total":5"#, r#""total":{"$x":1}"#),
                "unknown marker",
            ),
            (
                LINE.replace(r#""id":"o-1""#, r#""id":"o-1","extra":1"#),
                "unknown field `extra`",
            ),
            (LINE[..40].to_string(), "not valid JSON"),
        ];
        for (text, needle) in cases {
            let err = parsed(&text)
                .err()
                .unwrap_or_else(|| panic!("{text} must be refused"));
            assert!(err.starts_with("line 7: "), "{err}");
            assert!(err.contains(needle), "{needle:?} not in {err:?}");
        }
    }

    #[test]
    fn long_lines_are_refused_without_reading_them_whole() {
        let long = vec![b'x'; LINE_BYTES_MAX + 1];
        let mut input = io::Cursor::new(long);
        let mut buf = Vec::new();
        assert!(matches!(read_line(&mut input, &mut buf), Ok(Read::TooLong)));
        let mut input = io::Cursor::new(b"a\n\nb".to_vec());
        let mut lines = Vec::new();
        while let Ok(Read::Line) = read_line(&mut input, &mut buf) {
            lines.push(String::from_utf8_lossy(&buf).into_owned());
        }
        assert_eq!(lines, ["a", "", "b"]);
    }
}
