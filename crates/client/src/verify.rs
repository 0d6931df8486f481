//! `bazaar verify --data-dir DIR`: checks a data directory's databases against each other and
//! against the order log's own rules.
//!
//! - Every replica and catalog that `cluster.json` lists has a readable database.
//! - Every replica's orders are numbered densely from 0, and all replicas hold the same orders:
//!   one number is never two different trades (numbers never fork), and one request id is never
//!   two numbers (exactly once).
//! - Primary-backup: the logs themselves are identical; the first entry lists the catalog file
//!   the replicas were started with; replaying the log from it gives exactly the orders table.
//! - Per stock: quantity = initial + restocks + sells - buys (asserted by the replay, checked
//!   again against the orders table and a raft replica's checkpoint).
//! - Every catalog's saved view equals the log replayed up to the position it reflects.
//!
//! Entries a replica moved aside (a lone leader's orders, superseded by a newer leader's) are
//! counted and reported: every one is an order some client may have been told succeeded.
//!
//! The databases are opened read-only, so verify runs beside a live system as well as after it;
//! on a live system followers and catalogs may lag, which it reports as notes, not differences.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use bazaar_api::log::{Command, LogIndex, Position, StockDef};
use bazaar_api::replica::ReplicationMode;
use bazaar_api::{RequestId, StockState, TradeType};
use bazaar_catalog::file::Saved;
use bazaar_cluster::{ClusterFile, Role};
use bazaar_ledger::{Book, Outcome};
use bazaar_order::file::{Contents, RawEntry};
use bazaar_order::orders::OrderRow;

/// Most differences listed per kind; the rest are counted.
const LISTED_PER_KIND_MAX: usize = 20;

/// What verify found.
#[derive(Debug, Default)]
pub struct Report {
    /// Replicas read, by id.
    pub replicas: Vec<u8>,
    /// Catalogs read, by id.
    pub catalogs: Vec<u8>,
    /// Orders in the longest orders table.
    pub orders: usize,
    /// Stocks listed.
    pub stocks: usize,
    /// Every difference found (a failure), counted in full.
    pub difference_count: usize,
    /// The differences listed (at most [`LISTED_PER_KIND_MAX`] of each kind).
    pub differences: Vec<String>,
    /// Observations that are not failures.
    pub notes: Vec<String>,
}

impl Report {
    /// True when nothing is wrong.
    #[must_use]
    pub fn ok(&self) -> bool {
        self.difference_count == 0
    }

    fn differ(&mut self, kind_count: &mut usize, text: String) {
        *kind_count += 1;
        self.difference_count += 1;
        if *kind_count <= LISTED_PER_KIND_MAX {
            self.differences.push(text);
        } else if *kind_count == LISTED_PER_KIND_MAX + 1 {
            self.differences
                .push("(more of the same kind are counted, not listed)".into());
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for note in &self.notes {
            writeln!(f, "note: {note}")?;
        }
        for difference in &self.differences {
            writeln!(f, "difference: {difference}")?;
        }
        if self.ok() {
            write!(
                f,
                "verify: OK: {} replica logs identical and gap-free ({} orders); {} catalog(s) equal the log replayed; {} stocks conserve quantity",
                self.replicas.len(),
                self.orders,
                self.catalogs.len(),
                self.stocks
            )
        } else {
            write!(
                f,
                "verify: FAILED with {} difference(s)",
                self.difference_count
            )
        }
    }
}

/// What a data directory holds, by id.
#[derive(Debug, Default)]
pub struct Files {
    /// Order replica databases.
    pub replicas: BTreeMap<u8, PathBuf>,
    /// Catalog databases.
    pub catalogs: BTreeMap<u8, PathBuf>,
    /// The catalog CSV the replicas were started with (`None`: the built-in one).
    pub stocks: Option<PathBuf>,
    /// Whether `cluster.json` listed them (then a missing file is a difference).
    pub listed: bool,
}

fn flag_value(command: &[String], flag: &str) -> Option<String> {
    command
        .iter()
        .position(|a| a == flag)
        .and_then(|i| command.get(i + 1))
        .cloned()
}

/// The databases of `dir`: those `cluster.json` lists (by the `--db` of each command), else
/// every `order-<id>.db` and `catalog-<id>.db` found.
///
/// # Errors
/// The directory cannot be read, or `cluster.json` cannot be parsed.
pub fn files(dir: &Path) -> Result<Files, String> {
    let cluster = dir.join("cluster.json");
    if cluster.exists() {
        let file = ClusterFile::read(&cluster).map_err(|e| e.to_string())?;
        let mut files = Files {
            listed: true,
            ..Files::default()
        };
        for service in &file.services {
            let Some(db) = flag_value(&service.command, "--db") else {
                continue;
            };
            let id = service.id.unwrap_or(1);
            match service.role {
                Role::Order => {
                    files.replicas.insert(id, PathBuf::from(db));
                    if files.stocks.is_none() {
                        files.stocks = flag_value(&service.command, "--stocks").map(PathBuf::from);
                    }
                }
                Role::Catalog => {
                    files.catalogs.insert(id, PathBuf::from(db));
                }
                Role::Frontend => {}
            }
        }
        return Ok(files);
    }
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    let mut files = Files::default();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let id = |prefix: &str| {
            name.strip_prefix(prefix)
                .and_then(|rest| rest.strip_suffix(".db"))
                .and_then(|id| id.parse::<u8>().ok())
        };
        if let Some(id) = id("order-") {
            files.replicas.insert(id, entry.path());
        } else if let Some(id) = id("catalog-") {
            files.catalogs.insert(id, entry.path());
        }
    }
    Ok(files)
}

/// The order replica databases of `dir`, by id.
///
/// # Errors
/// As [`files`].
pub fn replica_files(dir: &Path) -> Result<BTreeMap<u8, PathBuf>, String> {
    Ok(files(dir)?.replicas)
}

/// Verifies the databases in `dir`.
///
/// # Errors
/// Nothing to verify at all (no replica database listed or found).
pub fn verify(dir: &Path) -> Result<Report, String> {
    let files = files(dir)?;
    if files.replicas.is_empty() {
        return Err(format!(
            "no order replica databases (order-<id>.db) in {}",
            dir.display()
        ));
    }
    let mut report = Report::default();
    let mut missing = 0;
    let mut replicas = BTreeMap::new();
    for (id, path) in &files.replicas {
        match bazaar_order::file::read(path) {
            Ok(contents) => {
                replicas.insert(*id, contents);
            }
            Err(e) if files.listed || path.exists() => {
                report.differ(&mut missing, format!("replica {id}: {e}"));
            }
            Err(_) => {}
        }
    }
    let mut catalogs = BTreeMap::new();
    for (id, path) in &files.catalogs {
        match bazaar_catalog::file::read(path) {
            Ok(saved) => {
                catalogs.insert(*id, saved);
            }
            Err(e) => report.differ(&mut missing, format!("catalog {id}: {e}")),
        }
    }
    let genesis = match bazaar_ledger::seed::load(files.stocks.as_deref()) {
        Ok(stocks) => Some(stocks),
        Err(e) => {
            report.notes.push(format!(
                "cannot read the catalog file the replicas name: {e}"
            ));
            None
        }
    };
    check(&replicas, &catalogs, genesis.as_deref(), &mut report);
    Ok(report)
}

/// The checks, on databases already read.
pub fn check(
    replicas: &BTreeMap<u8, Contents>,
    catalogs: &BTreeMap<u8, Saved>,
    genesis: Option<&[StockDef]>,
    report: &mut Report,
) {
    report.replicas = replicas.keys().copied().collect();
    report.catalogs = catalogs.keys().copied().collect();
    report.orders = replicas.values().map(|c| c.orders.len()).max().unwrap_or(0);
    check_orders(replicas, report);
    let mut stocks = 0;
    for (id, contents) in replicas {
        let book = ledger(*id, contents, genesis, report);
        check_state(*id, contents, book.as_ref(), genesis, report);
        let listed = book.map_or(contents.stocks.len(), |b| b.stocks().count());
        stocks = stocks.max(listed);
    }
    check_logs(replicas, report);
    report.stocks = stocks;
    check_catalogs(replicas, catalogs, report);
    check_conflicts(replicas, report);
}

/// Orders: dense (checked on reading), identical across replicas, one number per request id.
fn check_orders(replicas: &BTreeMap<u8, Contents>, report: &mut Report) {
    let mut forks = 0;
    let mut twice = 0;
    let mut lags = Vec::new();
    let Some(longest) = replicas.values().max_by_key(|c| c.orders.len()) else {
        return;
    };
    for (id, contents) in replicas {
        for (mine, theirs) in contents.orders.iter().zip(&longest.orders) {
            if !same_order(mine, theirs) {
                report.differ(
                    &mut forks,
                    format!(
                        "order {} differs: replica {id} holds {} {} {} (request {}), another replica {} {} {} (request {})",
                        mine.number, mine.kind, mine.quantity, mine.name, mine.request_id,
                        theirs.kind, theirs.quantity, theirs.name, theirs.request_id
                    ),
                );
            }
        }
        if contents.orders.len() < longest.orders.len() {
            lags.push(format!(
                "replica {id} holds {} of {} orders",
                contents.orders.len(),
                longest.orders.len()
            ));
        }
        let mut seen: HashMap<RequestId, u64> = HashMap::new();
        for order in &contents.orders {
            if let Some(first) = seen.insert(order.request_id, order.number.0) {
                report.differ(
                    &mut twice,
                    format!(
                        "replica {id}: request {} is orders {first} and {}",
                        order.request_id, order.number
                    ),
                );
            }
        }
    }
    let mut short = 0;
    for lag in lags {
        report.differ(
            &mut short,
            format!("{lag} (logs must be identical once the system is quiet)"),
        );
    }
}

fn same_order(a: &OrderRow, b: &OrderRow) -> bool {
    a.number == b.number
        && a.request_id == b.request_id
        && a.name == b.name
        && a.kind == b.kind
        && a.quantity == b.quantity
}

/// Primary-backup logs are identical entry for entry.
fn check_logs(replicas: &BTreeMap<u8, Contents>, report: &mut Report) {
    let pb: Vec<(&u8, &Contents)> = replicas
        .iter()
        .filter(|(_, c)| c.mode == ReplicationMode::PrimaryBackup)
        .collect();
    let mut differ = 0;
    for pair in pb.windows(2) {
        let ((a_id, a), (b_id, b)) = (pair[0], pair[1]);
        if let Some((x, y)) = a.log.iter().zip(&b.log).find(|(x, y)| x != y) {
            report.differ(
                &mut differ,
                format!(
                    "replicas {a_id} and {b_id} differ at log entry {}: epoch {} {:?} vs epoch {} {:?}",
                    x.index, x.epoch, x.commands, y.epoch, y.commands
                ),
            );
        }
    }
}

/// Replays a replica's log into a ledger and checks it against the orders table (and, in raft
/// mode, against the checkpointed stocks when the log was compacted).
fn ledger(
    id: u8,
    contents: &Contents,
    genesis: Option<&[StockDef]>,
    report: &mut Report,
) -> Option<Book> {
    let mut wrong = 0;
    let starts_at_zero = contents.log.first().is_none_or(|e| e.index == LogIndex(0));
    if !starts_at_zero {
        report.notes.push(format!(
            "replica {id}: its raft log was compacted (it starts at entry {}); its orders and saved stocks are checked against each other",
            contents.log.first().map_or(0, |e| e.index.0)
        ));
        return None;
    }
    let mut book = Book::new();
    let mut numbered: Vec<(TradeType, u64, String, RequestId, u64)> = Vec::new();
    for entry in &contents.log {
        if entry.index < book.position().next_index() {
            continue;
        }
        let (outcomes, _) = book.apply_at(entry.index, &entry.commands);
        for (command, outcome) in entry.commands.iter().zip(outcomes) {
            if let (Some(trade), Outcome::Traded(n)) = (command.trade(), outcome) {
                numbered.push((
                    trade.kind,
                    trade.quantity,
                    trade.name.clone(),
                    trade.request_id,
                    n.0,
                ));
            }
        }
        if contents.applied.is_some_and(|a| entry.index.0 >= a) {
            break;
        }
    }
    if let (Some(genesis), Some(RawEntry { commands, .. })) = (genesis, contents.log.first())
        && let Some(Command::Genesis { stocks }) = commands.first()
        && stocks.as_slice() != genesis
    {
        report.differ(
            &mut wrong,
            format!("replica {id}: the log's first entry does not list the catalog file the replicas were started with"),
        );
    }
    if numbered.len() != contents.orders.len() {
        report.differ(
            &mut wrong,
            format!(
                "replica {id}: replaying its log gives {} orders, its orders table holds {}",
                numbered.len(),
                contents.orders.len()
            ),
        );
    }
    for ((kind, quantity, name, request, number), row) in numbered.iter().zip(&contents.orders) {
        if row.number.0 != *number
            || row.request_id != *request
            || row.name != *name
            || row.kind != *kind
            || row.quantity != *quantity
        {
            report.differ(
                &mut wrong,
                format!("replica {id}: order {number} replays as {kind} {quantity} {name} (request {request}), the table says {} {} {} (request {})", row.kind, row.quantity, row.name, row.request_id),
            );
        }
    }
    Some(book)
}

/// Every catalog's saved view equals the log's state at the position it reflects: the log
/// replayed from a replica that holds all of it, or else a raft replica's state machine when
/// it stands at exactly that position (a compacted log cannot be replayed).
fn check_catalogs(
    replicas: &BTreeMap<u8, Contents>,
    catalogs: &BTreeMap<u8, Saved>,
    report: &mut Report,
) {
    let mut wrong = 0;
    let whole = replicas
        .iter()
        .filter(|(_, c)| c.log.first().is_none_or(|e| e.index == LogIndex(0)))
        .max_by_key(|(id, c)| (c.log.len(), std::cmp::Reverse(**id)));
    for (id, saved) in catalogs {
        let position = saved.snapshot.position;
        let expected = match expected_at(whole, replicas, position) {
            Ok((source, expected)) => {
                if let Some(note) = source {
                    report.notes.push(format!("catalog {id}: {note}"));
                }
                expected
            }
            Err(problem) => {
                match problem {
                    Unmatched::Beyond(text) => {
                        report.differ(&mut wrong, format!("catalog {id}: {text}"));
                    }
                    Unmatched::Unknown(text) => report.notes.push(format!("catalog {id}: {text}")),
                }
                continue;
            }
        };
        for stock in &expected {
            match saved.snapshot.stocks.iter().find(|s| s.name == stock.name) {
                Some(s) if s == stock => {}
                Some(s) => report.differ(
                    &mut wrong,
                    format!(
                        "catalog {id}: {} has quantity {} volume {} version {}; the log at position {position} says quantity {} volume {} version {}",
                        s.name, s.quantity, s.volume, s.version, stock.quantity, stock.volume, stock.version
                    ),
                ),
                None => report.differ(&mut wrong, format!("catalog {id} does not list {}", stock.name)),
            }
        }
        if saved.snapshot.stocks.len() != expected.len() {
            report.differ(
                &mut wrong,
                format!(
                    "catalog {id} lists {} stocks; the log at position {position} lists {}",
                    saved.snapshot.stocks.len(),
                    expected.len()
                ),
            );
        }
    }
}

/// Why a catalog's state has nothing to be compared with.
enum Unmatched {
    /// Its position is past every log: a difference.
    Beyond(String),
    /// No replica can show the state at its position (logs compacted past it): a note.
    Unknown(String),
}

/// The stocks at `position`, and a note on where they came from when it is worth saying.
fn expected_at(
    whole: Option<(&u8, &Contents)>,
    replicas: &BTreeMap<u8, Contents>,
    position: Position,
) -> Result<(Option<String>, Vec<StockState>), Unmatched> {
    if let Some((reference_id, reference)) = whole {
        let end = reference
            .log
            .last()
            .map_or(Position(0), |e| e.index.position());
        if position <= end {
            let mut book = Book::new();
            for entry in reference
                .log
                .iter()
                .take_while(|e| e.index.position() <= position)
            {
                book.apply_at(entry.index, &entry.commands);
            }
            let expected = book.snapshot();
            if position.0 > 0 && expected.position != position {
                return Err(Unmatched::Beyond(format!(
                    "the log has no position {position}"
                )));
            }
            let note = (position < end).then(|| {
                format!("its file reflects position {position} of {end} (it is written lazily); compared at {position}")
            });
            return Ok((note, expected.stocks));
        }
        if reference.mode == ReplicationMode::PrimaryBackup {
            return Err(Unmatched::Beyond(format!(
                "it reflects position {position}, beyond replica {reference_id}'s log ({end})"
            )));
        }
    }
    let at_position = replicas
        .iter()
        .find(|(_, c)| state_position(c) == Some(position));
    match at_position {
        Some((replica, contents)) => Ok((
            Some(format!(
                "compared with replica {replica}'s state machine at position {position} (its log is compacted)"
            )),
            contents.stocks.iter().map(|r| r.state.clone()).collect(),
        )),
        None => Err(Unmatched::Unknown(format!(
            "no replica holds the log up to its position {position} or stands there; not compared"
        ))),
    }
}

/// Raft: the position of the replica's state machine (the stocks it saved).
fn state_position(contents: &Contents) -> Option<Position> {
    (contents.mode == ReplicationMode::Raft).then(|| {
        contents
            .applied
            .map_or(Position(0), |a| LogIndex(a).position())
    })
}

/// Raft: the state machine's stocks agree with the orders table (every share bought and sold
/// is an order), conserve quantity, start from the catalog file, and equal the log replayed
/// when the whole log is there.
fn check_state(
    id: u8,
    contents: &Contents,
    replayed: Option<&Book>,
    genesis: Option<&[StockDef]>,
    report: &mut Report,
) {
    let Some(position) = state_position(contents) else {
        return;
    };
    let mut wrong = 0;
    let mut traded: HashMap<&str, (u128, u128)> = HashMap::new();
    for order in &contents.orders {
        let (bought, sold) = traded.entry(order.name.as_str()).or_default();
        match order.kind {
            TradeType::Buy => *bought += u128::from(order.quantity),
            TradeType::Sell => *sold += u128::from(order.quantity),
        }
    }
    for record in &contents.stocks {
        let name = &record.state.name;
        let (bought, sold) = traded.get(name.as_str()).copied().unwrap_or_default();
        if (u128::from(record.bought), u128::from(record.sold)) != (bought, sold) {
            report.differ(
                &mut wrong,
                format!("replica {id}: {name} counts {} bought and {} sold; its orders add up to {bought} and {sold}", record.bought, record.sold),
            );
        }
        if !record.is_conserved() {
            report.differ(
                &mut wrong,
                format!("replica {id}: {name} has quantity {}, but initial {} + restocked {} + sold {} - bought {} differs", record.state.quantity, record.initial, record.restocked, record.sold, record.bought),
            );
        }
        if let Some(def) = genesis.and_then(|g| g.iter().find(|d| d.name == *name))
            && def.quantity != record.initial
        {
            report.differ(
                &mut wrong,
                format!(
                    "replica {id}: {name} started at {}; the catalog file says {}",
                    record.initial, def.quantity
                ),
            );
        }
    }
    if let Some(book) = replayed.filter(|b| b.position() == position) {
        let replayed: Vec<&StockState> = book.stocks().collect();
        let stored: Vec<&StockState> = contents.stocks.iter().map(|r| &r.state).collect();
        if replayed != stored {
            report.differ(
                &mut wrong,
                format!("replica {id}: its saved stocks differ from its log replayed to position {position}"),
            );
        }
    }
}

/// Entries moved aside: each may be an order a client was told succeeded and that no log holds
/// any more.
fn check_conflicts(replicas: &BTreeMap<u8, Contents>, report: &mut Report) {
    for (id, contents) in replicas {
        let trades: Vec<&bazaar_api::log::TradeCommand> = contents
            .conflicts
            .iter()
            .flat_map(|e| e.commands.iter().filter_map(Command::trade))
            .collect();
        if contents.conflicts.is_empty() {
            continue;
        }
        let held_elsewhere = trades
            .iter()
            .filter(|t| {
                replicas
                    .values()
                    .any(|c| c.orders.iter().any(|o| o.request_id == t.request_id))
            })
            .count();
        let lost = trades.len() - held_elsewhere;
        let text = format!(
            "replica {id} moved {} log entries aside ({} trades, {held_elsewhere} of them applied again by a later leader)",
            contents.conflicts.len(),
            trades.len()
        );
        if lost == 0 {
            report.notes.push(text);
        } else {
            let mut moved = 0;
            report.differ(
                &mut moved,
                format!(
                    "{text}: {lost} trades are in no replica's log; a lone leader may have acknowledged them (or their clients saw an error)"
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests;
