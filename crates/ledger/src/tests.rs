use bazaar_api::Price;
use bazaar_api::log::TradeCommand;
use proptest::prelude::*;

use super::*;

fn genesis(stocks: &[(&str, u64)]) -> Command {
    Command::Genesis {
        stocks: stocks
            .iter()
            .map(|(name, quantity)| StockDef {
                name: (*name).to_owned(),
                price: Price::from_cents(150),
                quantity: *quantity,
            })
            .collect(),
    }
}

fn trade(name: &str, kind: TradeType, quantity: u64) -> Command {
    Command::Trade(TradeCommand {
        request_id: RequestId::new(),
        name: name.to_owned(),
        kind,
        quantity,
    })
}

/// Applies each command as its own entry; returns the outcomes.
fn run(book: &mut Book, commands: &[Command]) -> Vec<Outcome> {
    commands
        .iter()
        .map(|c| {
            let index = book.position().next_index();
            book.apply(index, std::slice::from_ref(c)).0.remove(0)
        })
        .collect()
}

#[test]
fn a_buy_larger_than_the_quantity_is_refused_and_takes_no_number() {
    let mut book = Book::new();
    let outcomes = run(
        &mut book,
        &[
            genesis(&[("A", 5)]),
            trade("A", TradeType::Buy, 3),
            trade("A", TradeType::Buy, 3),
            trade("A", TradeType::Buy, 2),
        ],
    );
    assert_eq!(
        outcomes,
        vec![
            Outcome::Listed,
            Outcome::Traded(TxnNumber(0)),
            Outcome::Refused(Refusal::InsufficientStock {
                name: "A".into(),
                wanted: 3,
                available: 2
            }),
            Outcome::Traded(TxnNumber(1)),
        ]
    );
    let a = book.stock("A").expect("listed");
    assert_eq!((a.quantity, a.volume, a.version), (0, 5, Version(2)));
    assert_eq!(book.next_number(), TxnNumber(2));
    assert_eq!(book.position(), Position(4));
}

#[test]
fn a_retried_request_id_keeps_its_first_number_and_changes_nothing() {
    let mut book = Book::new();
    let first = trade("A", TradeType::Sell, 4);
    run(&mut book, &[genesis(&[("A", 1)]), first.clone()]);
    let before = book.stock("A").cloned();
    let outcomes = run(&mut book, &[first]);
    assert_eq!(outcomes, vec![Outcome::Duplicate(TxnNumber(0))]);
    assert_eq!(book.stock("A").cloned(), before);
    assert_eq!(book.next_number(), TxnNumber(1));
}

#[test]
fn trades_before_the_genesis_or_of_unknown_stocks_are_refused() {
    let mut book = Book::new();
    assert_eq!(
        run(&mut book, &[trade("A", TradeType::Sell, 1)]),
        vec![Outcome::Refused(Refusal::NotListed)]
    );
    assert_eq!(
        run(
            &mut book,
            &[genesis(&[("A", 1)]), trade("B", TradeType::Sell, 1)]
        ),
        vec![
            Outcome::Listed,
            Outcome::Refused(Refusal::UnknownStock { name: "B".into() })
        ]
    );
}

#[test]
fn a_second_genesis_changes_nothing() {
    let mut book = Book::new();
    run(
        &mut book,
        &[genesis(&[("A", 1)]), trade("A", TradeType::Buy, 1)],
    );
    let outcomes = run(&mut book, &[genesis(&[("A", 50), ("B", 3)])]);
    assert_eq!(outcomes, vec![Outcome::Unchanged]);
    assert_eq!(book.stock("A").map(|s| s.quantity), Some(0));
    assert!(book.stock("B").is_none());
}

#[test]
fn restocks_set_sold_out_stocks_back_and_count_for_conservation() {
    let mut book = Book::new();
    let (_, nothing) = book.apply(LogIndex(0), &[genesis(&[("A", 2), ("B", 2)])]);
    assert_eq!(nothing.effects.len(), 1);
    run(&mut book, &[trade("A", TradeType::Buy, 2)]);
    let index = book.position().next_index();
    let (outcomes, entry) = book.apply(index, &[Command::Restock { to: 7 }]);
    assert_eq!(outcomes, vec![Outcome::Restocked(1)]);
    assert_eq!(
        entry.effects,
        vec![Effect::Restocked {
            name: "A".into(),
            quantity: 7
        }]
    );
    assert_eq!(book.stock("A").map(|s| s.quantity), Some(7));
    assert_eq!(book.stock("B").map(|s| s.quantity), Some(2));
    assert_eq!(
        run(&mut book, &[Command::Restock { to: 7 }]),
        vec![Outcome::Unchanged],
        "nothing is sold out any more"
    );
    assert_eq!(book.decide(&Command::Restock { to: 0 }), Outcome::Unchanged);
}

#[test]
fn sells_that_would_pass_what_a_store_holds_are_refused() {
    let mut book = Book::new();
    run(&mut book, &[genesis(&[("A", AMOUNT_MAX - 1)])]);
    assert_eq!(
        run(&mut book, &[trade("A", TradeType::Sell, 2)]),
        vec![Outcome::Refused(Refusal::AmountLimit {
            name: "A".into(),
            quantity: 2
        })]
    );
    assert_eq!(
        run(&mut book, &[trade("A", TradeType::Sell, 1)]),
        vec![Outcome::Traded(TxnNumber(0))]
    );
}

#[test]
#[should_panic(expected = "applied to a book at position")]
fn applying_out_of_order_stops_the_process() {
    let mut book = Book::new();
    book.apply(LogIndex(1), &[]);
}

#[test]
fn a_view_refuses_entries_that_do_not_fit() {
    let mut view = View::new();
    let skipped = AppliedEntry {
        index: LogIndex(1),
        effects: vec![],
    };
    assert!(view.apply(&skipped).is_err());
    let unknown = AppliedEntry {
        index: LogIndex(0),
        effects: vec![Effect::Traded {
            number: TxnNumber(0),
            name: "A".into(),
            kind: TradeType::Buy,
            quantity: 1,
        }],
    };
    assert!(view.apply(&unknown).is_err());
    assert_eq!(
        view.position(),
        Position(0),
        "a refused entry changes nothing"
    );
}

#[test]
fn replay_refuses_a_log_with_a_gap() {
    let commands = [genesis(&[("A", 1)])];
    assert!(Book::replay([(LogIndex(0), &commands[..])]).is_ok());
    let err = Book::replay([(LogIndex(1), &commands[..])]).expect_err("gap");
    assert!(err.contains("entry 1 where entry 0 belongs"), "{err}");
}

fn command_strategy() -> impl Strategy<Value = Command> {
    let names = prop::sample::select(vec!["A", "B", "C", "Z"]);
    prop_oneof![
        8 => (names.clone(), any::<bool>(), 1_u64..40).prop_map(|(name, buy, quantity)| {
            trade(name, if buy { TradeType::Buy } else { TradeType::Sell }, quantity)
        }),
        1 => (0_u64..30).prop_map(|to| Command::Restock { to }),
        1 => Just(genesis(&[("A", 5)])),
    ]
}

proptest! {
    /// Whatever the log holds, the book conserves every stock (asserted inside apply), numbers
    /// stay dense, a catalog following the effects ends up equal to the book, and replaying the
    /// same log gives the same book.
    #[test]
    fn a_view_following_the_effects_equals_the_book(
        commands in prop::collection::vec(command_strategy(), 0..200),
        batch in 1_usize..5,
    ) {
        let mut log = vec![genesis(&[("A", 10), ("B", 0), ("C", 3)])];
        log.extend(commands);
        let entries: Vec<&[Command]> = log.chunks(batch).collect();
        let mut book = Book::new();
        let mut view = View::new();
        let mut traded = 0_u64;
        for (i, commands) in entries.iter().enumerate() {
            let (outcomes, applied) = book.apply(LogIndex(i as u64), commands);
            traded += outcomes.iter().filter(|o| matches!(o, Outcome::Traded(_))).count() as u64;
            view.apply(&applied).map_err(TestCaseError::fail)?;
        }
        prop_assert_eq!(book.next_number(), TxnNumber(traded));
        prop_assert_eq!(view.snapshot(), book.snapshot());
        let replayed = Book::replay(
            entries.iter().enumerate().map(|(i, c)| (LogIndex(i as u64), *c)),
        ).map_err(TestCaseError::fail)?;
        prop_assert_eq!(replayed, book);
    }
}
