//! `baseline`: the plain server `app/bench/http.sh` measures beside `annals serve`, so that the
//! cost of everything Annals adds on its HTTP command path has a figure to be compared with.
//!
//! actix-web, one actix actor per account id, and sled with group commit, about 200 lines. It
//! serves `POST /v1/accounts/{id}/commands` with the bodies `app/bench/commands.lua` sends
//! (`{"type":"Deposit","amount":100}`, `{"type":"Withdraw","amount":150}`; an overdraft is
//! refused with 422) and answers 200 `{"id":…,"version":…}` once the command's event is durable:
//! the account's actor decides the event and waits (its mailbox paused, so versions stay
//! contiguous) while one writer thread batches the appends of all actors, inserts them into
//! sled, calls `Db::flush` — which in sled 0.34 writes but does not fsync — and then syncs the
//! files itself (`fdatasync` of the log file, of any other file that is new or changed size,
//! `fsync` of the directory when its entries changed) before it answers each waiting actor.
//!
//! What it leaves out on purpose: idempotency records, metrics, authentication, request ids,
//! limits beyond the journal queue, and rehydration — an account starts at balance 0 and
//! version 0 in every run (the events of an earlier run stay in the directory, unread).
//!
//! ```text
//! baseline --addr 127.0.0.1:0 --data-dir DIR    # prints "baseline listening on http://…"
//! ```

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Mutex;

use actix::prelude::*;
use actix_web::{web, App, HttpResponse, HttpServer};
use serde::Deserialize;
use tokio::sync::oneshot;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Most appends in one sled batch and one sync: bounds the latency one batch adds.
const BATCH_APPENDS_MAX: usize = 1024;
/// Most appends waiting for the writer; beyond it, 503 (the clients are outpacing the disk).
const QUEUE_CAPACITY: usize = 16 * 1024;

/// The command-line flags.
#[derive(Debug, clap::Parser)]
struct Args {
    /// The address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: std::net::SocketAddr,
    /// The sled database's directory (created if missing).
    #[arg(long)]
    data_dir: PathBuf,
}

/// A command body, as the benchmark's script sends it.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(tag = "type")]
enum Command {
    Deposit { amount: u64 },
    Withdraw { amount: u64 },
}

/// One event for the writer, and where to say that it is durable.
#[derive(Debug)]
struct Append {
    key: Vec<u8>,
    event: Vec<u8>,
    durable: oneshot::Sender<Result<(), String>>,
}

/// Why a command got no 200.
#[derive(Debug)]
enum Refusal {
    /// 422: the balance does not cover the withdrawal (or a deposit would overflow it).
    Rejected(&'static str),
    /// 503: the journal is full or failed.
    Unavailable(String),
}

/// One account: its balance and version, kept in memory (never rehydrated).
#[derive(Debug)]
struct Account {
    id: String,
    balance: u64,
    version: u64,
    journal: SyncSender<Append>,
}

impl Actor for Account {
    type Context = Context<Self>;
}

/// Execute a command; `Ok(version)` once its event is durable.
#[derive(Debug, Message)]
#[rtype(result = "Result<u64, Refusal>")]
struct Execute(Command);

impl Handler<Execute> for Account {
    // Atomic: the mailbox waits until the event is durable and applied, so the next command
    // sees its version and balance.
    type Result = AtomicResponse<Self, Result<u64, Refusal>>;

    fn handle(&mut self, Execute(command): Execute, _: &mut Context<Self>) -> Self::Result {
        let (balance, event) = match command {
            Command::Deposit { amount } => match self.balance.checked_add(amount) {
                Some(balance) => (balance, ("Deposited", amount)),
                None => return refuse(Refusal::Rejected("the balance would overflow")),
            },
            Command::Withdraw { amount } => match self.balance.checked_sub(amount) {
                Some(balance) => (balance, ("Withdrawn", amount)),
                None => return refuse(Refusal::Rejected("insufficient funds")),
            },
        };
        let version = self.version + 1;
        let mut key = Vec::with_capacity(self.id.len() + 9);
        key.extend_from_slice(self.id.as_bytes());
        key.push(0);
        key.extend_from_slice(&version.to_be_bytes());
        let event = serde_json::json!({"type": event.0, "amount": event.1}).to_string();
        let (durable, done) = oneshot::channel();
        let append = Append {
            key,
            event: event.into_bytes(),
            durable,
        };
        if let Err(e) = self.journal.try_send(append) {
            let why = match e {
                TrySendError::Full(_) => "the journal queue is full",
                TrySendError::Disconnected(_) => "the journal has stopped",
            };
            return refuse(Refusal::Unavailable(why.to_owned()));
        }
        let wait = async move {
            done.await
                .unwrap_or_else(|_| Err("the journal stopped".into()))
        };
        AtomicResponse::new(Box::pin(wait.into_actor(self).map(
            move |durable, account, _| {
                durable.map_err(Refusal::Unavailable)?;
                account.balance = balance;
                account.version = version;
                Ok(version)
            },
        )))
    }
}

fn refuse(refusal: Refusal) -> AtomicResponse<Account, Result<u64, Refusal>> {
    AtomicResponse::new(Box::pin(fut::ready(Err(refusal))))
}

/// The handlers' state: the live accounts, and the journal's queue.
#[derive(Debug)]
struct State {
    accounts: Mutex<HashMap<String, Addr<Account>>>,
    journal: SyncSender<Append>,
}

impl State {
    /// The actor of account `id`, started on this worker's arbiter if it has none yet.
    fn account(&self, id: &str) -> Addr<Account> {
        let mut accounts = self.accounts.lock().unwrap_or_else(|e| e.into_inner());
        let journal = &self.journal;
        accounts
            .entry(id.to_owned())
            .or_insert_with(|| {
                let id = id.to_owned();
                Account {
                    id,
                    balance: 0,
                    version: 0,
                    journal: journal.clone(),
                }
                .start()
            })
            .clone()
    }
}

async fn command(
    state: web::Data<State>,
    id: web::Path<String>,
    body: web::Json<Command>,
) -> HttpResponse {
    let id = id.into_inner();
    match state.account(&id).send(Execute(body.into_inner())).await {
        Ok(Ok(version)) => {
            HttpResponse::Ok().json(serde_json::json!({"id": id, "version": version}))
        }
        Ok(Err(Refusal::Rejected(why))) => {
            HttpResponse::UnprocessableEntity().json(serde_json::json!({"error": why}))
        }
        Ok(Err(Refusal::Unavailable(why))) => {
            HttpResponse::ServiceUnavailable().json(serde_json::json!({"error": why}))
        }
        Err(e) => {
            HttpResponse::ServiceUnavailable().json(serde_json::json!({"error": e.to_string()}))
        }
    }
}

/// The routes, with the state; the server and the tests build the same app.
fn routes(state: web::Data<State>) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.app_data(state)
            .route("/v1/accounts/{id}/commands", web::post().to(command))
            .route("/readyz", web::get().to(HttpResponse::Ok));
    }
}

/// Opens the database in `dir` and starts the writer thread; returns the database and the
/// journal's queue.
fn open(dir: &Path) -> std::io::Result<(sled::Db, SyncSender<Append>)> {
    let db = sled::open(dir).map_err(std::io::Error::other)?;
    let mut disk = Disk::open(dir)?;
    let (journal, queue) = sync_channel(QUEUE_CAPACITY);
    let writer = db.clone();
    std::thread::Builder::new()
        .name("baseline-writer".into())
        .spawn(move || write(&writer, &mut disk, &queue))?;
    Ok((db, journal))
}

/// The group commit: takes what is queued (up to a batch), writes it to sled in one batch,
/// makes it durable, answers each append. After a failure nothing is acknowledged any more:
/// what sled holds in memory can no longer be trusted to reach the disk.
fn write(db: &sled::Db, disk: &mut Disk, queue: &Receiver<Append>) {
    while let Ok(first) = queue.recv() {
        let mut appends = vec![first];
        appends.extend(queue.try_iter().take(BATCH_APPENDS_MAX - 1));
        let mut batch = sled::Batch::default();
        for append in &appends {
            batch.insert(append.key.as_slice(), append.event.as_slice());
        }
        let written = db
            .apply_batch(batch)
            .and_then(|()| db.flush())
            .map_err(std::io::Error::other)
            .and_then(|_| disk.sync());
        let failed = written
            .as_ref()
            .err()
            .map(|e| format!("cannot write the journal: {e}"));
        for append in appends {
            let _ = append.durable.send(failed.clone().map_or(Ok(()), Err));
        }
        if let Some(why) = failed {
            eprintln!("baseline: {why}; no more writes");
            return;
        }
    }
}

/// The files of the sled directory and what has been synced of them.
#[derive(Debug)]
struct Disk {
    dir: PathBuf,
    dir_handle: File,
    /// sled's log file: written on every batch, in place or at its end, so synced every time.
    log: File,
    /// Every other file, with its length when it was last synced.
    synced: HashMap<OsString, u64>,
    /// The directory's entries when it was last synced.
    entries: Vec<OsString>,
}

impl Disk {
    fn open(dir: &Path) -> std::io::Result<Disk> {
        let mut disk = Disk {
            dir: dir.to_owned(),
            dir_handle: File::open(dir)?,
            log: File::open(dir.join("db"))?,
            synced: HashMap::new(),
            entries: Vec::new(),
        };
        disk.sync()?;
        Ok(disk)
    }

    /// `fdatasync` of the log file and of every other file that is new or changed size, then
    /// `fsync` of the directory if its entries changed (a new file, a snapshot renamed).
    fn sync(&mut self) -> std::io::Result<()> {
        let mut entries = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let (name, meta) = (entry.file_name(), entry.metadata()?);
            if meta.is_file() && name != "db" && self.synced.get(&name) != Some(&meta.len()) {
                File::open(entry.path())?.sync_data()?;
                self.synced.insert(name.clone(), meta.len());
            }
            entries.push(name);
        }
        self.log.sync_data()?;
        entries.sort();
        if entries != self.entries {
            self.dir_handle.sync_all()?;
            self.synced.retain(|name, _| entries.contains(name));
            self.entries = entries;
        }
        Ok(())
    }
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let args = <Args as clap::Parser>::parse();
    let (_db, journal) = open(&args.data_dir)?;
    let state = web::Data::new(State {
        accounts: Mutex::new(HashMap::new()),
        journal,
    });
    let server =
        HttpServer::new(move || App::new().configure(routes(state.clone()))).bind(args.addr)?;
    for addr in server.addrs() {
        eprintln!("baseline listening on http://{addr}");
    }
    server.run().await
}

#[cfg(test)]
mod tests {
    use actix_web::test;
    use serde_json::json;

    use super::*;

    #[actix_web::test]
    async fn commands_are_durable_in_order_and_overdrafts_refused() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let (db, journal) = open(dir.path())?;
        let state = web::Data::new(State {
            accounts: Mutex::new(HashMap::new()),
            journal,
        });
        let app = test::init_service(App::new().configure(routes(state))).await;
        let deposit = r#"{"type":"Deposit","amount":100}"#;
        let withdraw = r#"{"type":"Withdraw","amount":150}"#;
        let expected = [
            ("a", deposit, 200, json!({"id": "a", "version": 1})),
            ("a", withdraw, 422, json!({"error": "insufficient funds"})),
            ("a", deposit, 200, json!({"id": "a", "version": 2})),
            ("a", withdraw, 200, json!({"id": "a", "version": 3})),
            ("b", deposit, 200, json!({"id": "b", "version": 1})),
        ];
        for (id, body, status, reply) in expected {
            let request = test::TestRequest::post()
                .uri(&format!("/v1/accounts/{id}/commands"))
                .insert_header(("content-type", "application/json"))
                .set_payload(body)
                .to_request();
            let response = test::call_service(&app, request).await;
            assert_eq!(response.status().as_u16(), status, "{id} {body}");
            let got: serde_json::Value = test::read_body_json(response).await;
            assert_eq!(got, reply, "{id} {body}");
        }
        // Every acknowledged event is in the database, under its account and version.
        let keys: Vec<Vec<u8>> = db
            .iter()
            .keys()
            .map(|key| key.map(|key| key.to_vec()))
            .collect::<Result<_, _>>()
            .map_err(std::io::Error::other)?;
        let key = |id: &str, version: u64| [id.as_bytes(), &[0], &version.to_be_bytes()].concat();
        assert_eq!(keys, [key("a", 1), key("a", 2), key("a", 3), key("b", 1)]);
        Ok(())
    }
}
