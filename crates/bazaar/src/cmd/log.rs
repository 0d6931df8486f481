//! `bazaar log --data-dir DIR --replica N [--json | --csv]`: one replica's order log, entry by
//! entry, read from its database file (the service may be running or stopped).
//!
//! Each command is printed with what it did, found in the replica's orders table rather than by
//! replaying (a raft log may have been compacted): a trade either made the order that names its
//! entry and request id, repeated an earlier request (applied once, so no new order), or was
//! refused by the apply step (not enough stock, unknown stock, a value past what can be stored).
//! Only raft logs hold refused trades: a primary-backup leader refuses before it appends.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::anyhow;
use bazaar_api::log::{Command, LogIndex};
use bazaar_api::replica::ReplicationMode;
use bazaar_api::{Epoch, RequestId, TxnNumber};
use bazaar_order::file::{Contents, RawEntry};
use serde::Serialize;

use crate::Failure;

/// Flags of `bazaar log`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Data directory holding order-<id>.db.
    #[arg(long, env = "BAZAAR_DATA_DIR", default_value = "bazaar-data")]
    data_dir: PathBuf,
    /// The replica whose log to print (its id: order-<id>.db).
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..))]
    replica: u8,
    /// One JSON document: the file's facts and every entry with its command and outcome.
    #[arg(long, conflicts_with = "csv")]
    json: bool,
    /// One CSV row per command, with a header.
    #[arg(long)]
    csv: bool,
}

/// Prints the log.
pub fn run(args: &Args) -> Result<(), Failure> {
    let path = args.data_dir.join(format!("order-{}.db", args.replica));
    if !path.exists() {
        return Err(Failure::Runtime(anyhow!(
            "{} does not exist; replicas in {}: {}",
            path.display(),
            args.data_dir.display(),
            replicas_in(&args.data_dir)
        )));
    }
    let contents = bazaar_order::file::read(&path).map_err(|e| Failure::Runtime(anyhow!(e)))?;
    let printed = Printed::of(&path, &contents);
    let text = if args.json {
        let mut text = serde_json::to_string_pretty(&printed)
            .map_err(|e| Failure::Runtime(anyhow!("cannot encode the log: {e}")))?;
        text.push('\n');
        text
    } else if args.csv {
        printed.csv()
    } else {
        printed.text()
    };
    super::print_out(&text).map_err(Failure::Runtime)
}

/// The replica ids with a database in `dir`, for an error message.
fn replicas_in(dir: &Path) -> String {
    let mut ids: Vec<u8> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            name.strip_prefix("order-")?
                .strip_suffix(".db")?
                .parse()
                .ok()
        })
        .collect();
    ids.sort_unstable();
    if ids.is_empty() {
        "none".to_owned()
    } else {
        ids.iter().map(u8::to_string).collect::<Vec<_>>().join(", ")
    }
}

/// What a command did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
enum Outcome {
    /// The trade made this order.
    Order {
        /// Its transaction number.
        number: TxnNumber,
    },
    /// The trade repeats a request applied earlier (as this order): nothing new happened.
    Repeat {
        /// The order the first copy made.
        number: TxnNumber,
    },
    /// The apply step refused the trade; it took no number.
    Refused,
    /// Not a trade: a genesis or a restock, applied as it says.
    Applied,
}

impl Outcome {
    fn describe(self) -> String {
        match self {
            Self::Order { number } => format!("order #{number}"),
            Self::Repeat { number } => format!("repeat of order #{number}: no effect"),
            Self::Refused => "refused".to_owned(),
            Self::Applied => String::new(),
        }
    }
}

/// One command of one entry.
#[derive(Debug, Serialize)]
struct Row {
    index: LogIndex,
    /// The epoch (raft: the term) of the leader that wrote the entry.
    epoch: Epoch,
    /// None for a raft entry without commands (a new term's blank entry, a membership change).
    command: Option<Command>,
    outcome: Option<Outcome>,
}

/// The whole printout.
#[derive(Debug, Serialize)]
struct Printed {
    file: String,
    mode: ReplicationMode,
    /// Entries in the log (a raft entry may hold several commands, one row each).
    log_entries: usize,
    orders: usize,
    /// Raft: the last index applied.
    #[serde(skip_serializing_if = "Option::is_none")]
    applied: Option<u64>,
    entries: Vec<Row>,
    /// Primary-backup: entries moved aside because a newer leader's log replaced them; they
    /// never took effect.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    moved_aside: Vec<Row>,
}

impl Printed {
    fn of(path: &Path, contents: &Contents) -> Self {
        let made: HashMap<RequestId, (TxnNumber, LogIndex)> = contents
            .orders
            .iter()
            .map(|o| (o.request_id, (o.number, o.log_index)))
            .collect();
        let rows = |entries: &[RawEntry], in_log: bool| -> Vec<Row> {
            entries
                .iter()
                .flat_map(|entry| {
                    let commands: Vec<Option<&Command>> = if entry.commands.is_empty() {
                        vec![None]
                    } else {
                        entry.commands.iter().map(Some).collect()
                    };
                    commands.into_iter().map(|command| Row {
                        index: entry.index,
                        epoch: entry.epoch,
                        outcome: command
                            .filter(|_| in_log)
                            .map(|c| outcome(c, entry.index, &made)),
                        command: command.cloned(),
                    })
                })
                .collect()
        };
        Self {
            file: path.display().to_string(),
            mode: contents.mode,
            log_entries: contents.log.len(),
            orders: contents.orders.len(),
            applied: contents.applied,
            entries: rows(&contents.log, true),
            moved_aside: rows(&contents.conflicts, false),
        }
    }

    fn epoch_word(&self) -> &'static str {
        match self.mode {
            ReplicationMode::PrimaryBackup => "epoch",
            ReplicationMode::Raft => "term",
        }
    }

    fn text(&self) -> String {
        let mut out = String::new();
        let _ = write!(
            out,
            "{}: {} log, {} entries ({} commands), {} orders",
            self.file,
            self.mode.as_str(),
            self.log_entries,
            self.entries.len(),
            self.orders
        );
        if let Some(applied) = self.applied {
            let _ = write!(out, ", applied through index {applied}");
        }
        if self.mode == ReplicationMode::Raft && self.entries.first().is_some_and(|r| r.index.0 > 1)
        {
            out.push_str(" (earlier entries were compacted into a snapshot)");
        }
        out.push('\n');
        let table = |out: &mut String, rows: &[Row]| {
            let _ = writeln!(
                out,
                "{:>7}  {:>5}  {:<44}  outcome",
                "index",
                self.epoch_word(),
                "command"
            );
            for row in rows {
                let command = row.command.as_ref().map_or_else(
                    || "(no command: a new term's entry or a membership change)".to_owned(),
                    describe,
                );
                let outcome = row.outcome.map(Outcome::describe).unwrap_or_default();
                let _ = writeln!(
                    out,
                    "{:>7}  {:>5}  {command:<44}  {outcome}",
                    row.index, row.epoch
                );
            }
        };
        table(&mut out, &self.entries);
        if !self.moved_aside.is_empty() {
            out.push_str("\nmoved aside (a newer leader's log replaced them; no effect):\n");
            table(&mut out, &self.moved_aside);
        }
        out
    }

    fn csv(&self) -> String {
        let mut out = format!(
            "index,{},op,name,type,quantity,request_id,outcome,number,moved_aside\n",
            self.epoch_word()
        );
        let rows = self
            .entries
            .iter()
            .map(|r| (r, false))
            .chain(self.moved_aside.iter().map(|r| (r, true)));
        for (row, moved_aside) in rows {
            let (op, name, kind, quantity, request_id) = match &row.command {
                None => (
                    "none",
                    String::new(),
                    String::new(),
                    String::new(),
                    String::new(),
                ),
                Some(Command::Genesis { stocks }) => (
                    "genesis",
                    String::new(),
                    String::new(),
                    stocks.len().to_string(),
                    String::new(),
                ),
                Some(Command::Trade(trade)) => (
                    "trade",
                    trade.name.clone(),
                    trade.kind.to_string(),
                    trade.quantity.to_string(),
                    trade.request_id.to_string(),
                ),
                Some(Command::Restock { to }) => (
                    "restock",
                    String::new(),
                    String::new(),
                    to.to_string(),
                    String::new(),
                ),
            };
            let (result, number) = match row.outcome {
                Some(Outcome::Order { number }) => ("order", number.to_string()),
                Some(Outcome::Repeat { number }) => ("repeat", number.to_string()),
                Some(Outcome::Refused) => ("refused", String::new()),
                Some(Outcome::Applied) => ("applied", String::new()),
                None => ("", String::new()),
            };
            let _ = writeln!(
                out,
                "{},{},{op},{},{kind},{quantity},{request_id},{result},{number},{moved_aside}",
                row.index,
                row.epoch,
                csv_field(&name)
            );
        }
        out
    }
}

/// What a command in the log at `index` did, from the orders it left.
fn outcome(
    command: &Command,
    index: LogIndex,
    made: &HashMap<RequestId, (TxnNumber, LogIndex)>,
) -> Outcome {
    match command {
        Command::Trade(trade) => match made.get(&trade.request_id) {
            Some(&(number, at)) if at == index => Outcome::Order { number },
            Some(&(number, _)) => Outcome::Repeat { number },
            None => Outcome::Refused,
        },
        Command::Genesis { .. } | Command::Restock { .. } => Outcome::Applied,
    }
}

fn describe(command: &Command) -> String {
    match command {
        Command::Genesis { stocks } => format!("genesis: {} stocks listed", stocks.len()),
        Command::Trade(trade) => format!(
            "{} {} {} (request {})",
            trade.kind,
            trade.quantity,
            trade.name,
            short(trade.request_id)
        ),
        Command::Restock { to } => format!("restock sold-out stocks to {to}"),
    }
}

/// The first group of a request id: enough to tell requests apart in a table.
fn short(id: RequestId) -> String {
    id.to_string().chars().take(8).collect()
}

/// A CSV field, quoted when it holds a separator, a quote or a line break.
fn csv_field(value: &str) -> String {
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use bazaar_api::TradeType;
    use bazaar_api::log::TradeCommand;

    use super::*;

    fn trade(request_id: RequestId) -> Command {
        Command::Trade(TradeCommand {
            request_id,
            name: "FishCo".into(),
            kind: TradeType::Buy,
            quantity: 3,
        })
    }

    #[test]
    fn a_trade_made_its_order_repeated_one_or_was_refused() {
        let (first, refused) = (RequestId::new(), RequestId::new());
        let made = HashMap::from([(first, (TxnNumber(4), LogIndex(7)))]);
        assert_eq!(
            outcome(&trade(first), LogIndex(7), &made),
            Outcome::Order {
                number: TxnNumber(4)
            }
        );
        assert_eq!(
            outcome(&trade(first), LogIndex(9), &made),
            Outcome::Repeat {
                number: TxnNumber(4)
            },
            "the same request later in the log is a retry applied once"
        );
        assert_eq!(
            outcome(&trade(refused), LogIndex(8), &made),
            Outcome::Refused
        );
        assert_eq!(
            outcome(&Command::Restock { to: 100 }, LogIndex(8), &made),
            Outcome::Applied
        );
    }

    #[test]
    fn csv_fields_are_quoted_only_when_needed() {
        assert_eq!(csv_field("FishCo"), "FishCo");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
    }
}
