//! Concurrent trading: quantities never go below zero, conservation holds, numbers are dense.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use crate::phase;
use crate::support::{System, checks};

const CLIENTS: usize = 8;
const TRADES_PER_CLIENT: usize = 40;

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_traders_never_oversell_and_numbers_are_dense() {
    let system = System::start().await;
    let api = system.api();
    let stock = "FanCo";
    let initial = i64::try_from(api.quantity(stock).await).expect("small");
    // Net shares sold minus bought, over acknowledged trades only.
    let net = Arc::new(AtomicI64::new(0));

    phase!("{CLIENTS} clients trade {stock} at once, mostly buying, so buys run out");
    let clients = (0..CLIENTS).map(|client| {
        let (api, net) = (api.clone(), Arc::clone(&net));
        tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut refused = 0;
            for i in 0..TRADES_PER_CLIENT {
                let (kind, quantity) = if (client + i) % 4 == 0 {
                    ("sell", 2)
                } else {
                    ("buy", 5)
                };
                match api.trade(stock, kind, quantity).await {
                    Ok(number) => {
                        let signed = i64::try_from(quantity).expect("small");
                        net.fetch_add(
                            if kind == "sell" { signed } else { -signed },
                            Ordering::SeqCst,
                        );
                        acked.push(number);
                    }
                    Err((409, _)) => refused += 1,
                    Err(other) => panic!("client {client}: unexpected {other:?}"),
                }
            }
            (acked, refused)
        })
    });
    let mut acked = BTreeSet::new();
    let mut refused = 0;
    for outcome in futures::future::join_all(clients).await {
        let (numbers, r) = outcome.expect("client task");
        refused += r;
        for n in numbers {
            assert!(acked.insert(n), "transaction number {n} given twice");
        }
    }
    assert!(refused > 0, "the test must drive the stock to exhaustion");

    phase!("final quantity = initial + sells - buys; numbers are 0..N-1");
    let expected = initial + net.load(Ordering::SeqCst);
    assert!(expected >= 0);
    assert_eq!(
        i64::try_from(api.quantity(stock).await).expect("small"),
        expected
    );
    let n = acked.len() as u64;
    assert_eq!(
        acked,
        (0..n).collect::<BTreeSet<_>>(),
        "numbers must be dense"
    );

    phase!("the databases agree");
    system.wait_replicas_equal(&[1, 2, 3]).await;
    checks::assert_no_gaps(&system.data_dir());
    checks::assert_logs_identical(&system.data_dir());
    checks::assert_acked_present(&system.data_dir(), &acked);
    checks::assert_verified(&system.data_dir());
}
