//! State survives restarts: of each service, and of the whole system on the same data dir.

use bazaar_cluster::{Cluster, Role};

use crate::phase;
use crate::support::{Api, System, checks};

#[tokio::test(flavor = "multi_thread")]
async fn state_survives_restarting_each_service_and_the_whole_system() {
    let mut system = System::start().await;
    let api = system.api();
    phase!("trade a little");
    assert_eq!(api.trade("BoarCo", "buy", 10).await, Ok(0));
    assert_eq!(api.trade("BoarCo", "sell", 4).await, Ok(1));
    assert_eq!(api.trade("LionCo", "buy", 7).await, Ok(2));

    phase!("kill -9 and restart the catalog: quantities survive");
    system.cluster().kill(Role::Catalog, Some(1)).expect("kill");
    system
        .cluster()
        .restart(Role::Catalog, Some(1))
        .await
        .expect("restart");
    assert_eq!(api.quantity("BoarCo").await, 94);
    assert_eq!(api.quantity("LionCo").await, 93);

    phase!("kill -9 and restart every replica in turn: orders survive");
    for id in 1..=3 {
        system.cluster().kill(Role::Order, Some(id)).expect("kill");
        system
            .cluster()
            .restart(Role::Order, Some(id))
            .await
            .expect("restart");
    }
    let (status, order) = api.get("/orders/2").await;
    assert_eq!(status, 200, "{order}");
    assert_eq!(order["data"]["name"], "LionCo");

    phase!("restart the front-end: same answers");
    system.cluster().kill(Role::Frontend, None).expect("kill");
    system
        .cluster()
        .restart(Role::Frontend, None)
        .await
        .expect("restart");
    assert_eq!(api.quantity("BoarCo").await, 94);
    assert_eq!(api.trade("BoarCo", "buy", 1).await, Ok(3));

    phase!("stop everything cleanly and start a new system on the same data directory");
    system.stop().await;
    let spec = System::spec(system.dir.path(), |_| {});
    let cluster = Cluster::start(spec).await.expect("start again");
    let api = Api::new(cluster.frontend_url());
    assert_eq!(api.quantity("BoarCo").await, 93);
    assert_eq!(
        api.trade("FishCo", "sell", 1).await,
        Ok(4),
        "numbering continues"
    );
    let (status, order) = api.get("/orders/0").await;
    assert_eq!(
        (status, order["data"]["quantity"].as_u64()),
        (200, Some(10))
    );
    system.cluster = Some(cluster);
    system.wait_replicas_equal(&[1, 2, 3]).await;
    system.wait_quiet().await;
    checks::assert_verified(&system.data_dir());
}
