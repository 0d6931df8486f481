//! The dashboard in a real browser: headless Chromium driven over WebDriver (chromedriver).
//! They need Debian's `chromium` and `chromium-driver`, so `cargo test` skips them;
//! `.ci/browser` installs both and runs them:
//!
//! ```sh
//! .ci/browser                                    # or, with both installed:
//! cargo test -p bazaar --test it browser:: -- --ignored --test-threads 1
//! ```
//!
//! With `BAZAAR_SCREENSHOT_DIR=docs/dashboard` they also write the screenshots in the docs.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bazaar_cluster::Role;
use serde_json::{Value, json};

use crate::phase;
use crate::support::System;
use crate::support::up::Up;
use crate::support::webdriver::{Driver, LogEntry, Session, key};

const DESKTOP: (u32, u32) = (1280, 800);
const PHONE: (u32, u32) = (390, 844);

/// How long the page may take to show something the server already has.
const SHOW_DEADLINE: Duration = Duration::from_secs(10);

fn screenshot_dir() -> Option<PathBuf> {
    std::env::var_os("BAZAAR_SCREENSHOT_DIR").map(PathBuf::from)
}

fn save(name: &str, png: &[u8]) {
    if let Some(dir) = screenshot_dir() {
        std::fs::create_dir_all(&dir).expect("screenshot dir");
        std::fs::write(dir.join(name), png).expect("write screenshot");
        eprintln!("wrote {}", dir.join(name).display());
    }
}

/// Fails on any console error the page did not cause on purpose: the allowed ones are the
/// browser's own notes about API replies the test asked for (a 404 lookup, a 409 trade).
fn assert_clean_console(page: &str, entries: &[LogEntry], allowed: &[&str]) {
    let errors: Vec<&LogEntry> = entries
        .iter()
        .filter(|e| e.level == "SEVERE" || e.level == "WARNING")
        .filter(|e| !(e.source == "network" && allowed.iter().any(|a| e.message.contains(a))))
        .collect();
    assert!(errors.is_empty(), "console of {page}: {errors:#?}");
}

/// The quantity the page shows for a stock, or null.
const QUANTITY_SHOWN: &str = "
    const row = document.querySelector('#stocks tbody tr[data-key=\"' + arguments[0] + '\"]');
    return row ? row.cells[2].textContent : null;";

async fn quantity_shown(page: &Session, name: &str) -> Option<u64> {
    page.execute(QUANTITY_SHOWN, vec![json!(name)])
        .await
        .as_str()
        .and_then(|t| t.replace(',', "").parse().ok())
}

async fn wait_quantity(page: &Session, name: &str, quantity: u64, what: &str) {
    let script = format!(
        "const row = document.querySelector('#stocks tbody tr[data-key=\"{name}\"]');
         return row !== null && row.cells[2].textContent.replaceAll(',', '') === '{quantity}';"
    );
    page.wait_for(what, SHOW_DEADLINE, &script).await;
}

/// Sum of the page's layout shifts not caused by input (the Cumulative Layout Shift score),
/// read through a buffered observer (the older `getEntriesByType` call logs a deprecation
/// warning, which would fail the console check).
async fn layout_shift(page: &Session) -> f64 {
    page.execute_async(
        "const done = arguments[arguments.length - 1];
         let total = 0;
         new PerformanceObserver((list) => {
             for (const e of list.getEntries()) if (!e.hadRecentInput) total += e.value;
         }).observe({type: 'layout-shift', buffered: true});
         setTimeout(() => done(total), 300);",
        vec![],
    )
    .await
    .as_f64()
    .unwrap_or(f64::NAN)
}

/// Page weight and first-render timings, as the browser measured them.
async fn load_numbers(page: &Session) -> Value {
    page.execute(
        "const nav = performance.getEntriesByType('navigation')[0];
         const res = performance.getEntriesByType('resource')
             .filter((r) => !r.name.endsWith('/dashboard/events'));
         const paint = performance.getEntriesByName('first-contentful-paint')[0];
         const market = performance.getEntriesByName('bazaar-first-market')[0];
         return {
           html_bytes: nav.decodedBodySize,
           asset_bytes: res.reduce((a, r) => a + r.decodedBodySize, 0),
           requests: 1 + res.length,
           dom_content_loaded_ms: Math.round(nav.domContentLoadedEventEnd),
           first_contentful_paint_ms: paint ? Math.round(paint.startTime) : null,
           first_market_data_ms: market ? Math.round(market.startTime) : null,
         };",
        vec![],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium and chromedriver: .ci/browser runs them"]
async fn the_page_shows_every_stock_and_a_keyboard_trade_updates_two_pages() {
    let system = System::start().await;
    let base = system.url(Role::Frontend, None);
    let api = system.api();
    let driver = Driver::start().await;

    phase!("the page loads and shows every stock with the API's quantity");
    let (status, stocks) = api.get("/stocks").await;
    assert_eq!(status, 200);
    let stocks = stocks["data"].as_array().expect("stocks").clone();
    let first = driver.session(DESKTOP.0, DESKTOP.1).await;
    let started = Instant::now();
    first.goto(&format!("{base}/")).await;
    first
        .wait_for(
            "every stock is listed",
            SHOW_DEADLINE,
            &format!(
                "return document.querySelectorAll('#stocks tbody tr').length === {}",
                stocks.len()
            ),
        )
        .await;
    eprintln!(
        "every stock shown {:?} after navigation started",
        started.elapsed()
    );
    for stock in &stocks {
        let name = stock["name"].as_str().expect("name");
        assert_eq!(
            quantity_shown(&first, name).await,
            stock["quantity"].as_u64(),
            "{name}"
        );
    }
    eprintln!("load: {}", load_numbers(&first).await);

    phase!("a second page is open too");
    let second = driver.session(DESKTOP.0, DESKTOP.1).await;
    second.goto(&format!("{base}/")).await;
    let before = quantity_shown(&first, "FishCo")
        .await
        .expect("FishCo shown");
    wait_quantity(&second, "FishCo", before, "the second page lists FishCo").await;

    phase!("a trade placed with the keyboard alone: Tab to the form, type, Enter");
    first
        .execute(
            "document.activeElement && document.activeElement.blur()",
            vec![],
        )
        .await;
    first.tab_to("trade-stock", 40).await;
    first.keys("FishCo").await;
    first.keys(&key::TAB.to_string()).await;
    assert_eq!(first.focused_id().await, "trade-type");
    first.keys(&key::TAB.to_string()).await;
    assert_eq!(first.focused_id().await, "trade-quantity");
    first
        .keys(&format!("{}a3{}", key::CONTROL, key::ENTER))
        .await;
    let result = first
        .wait_for(
            "the form shows the transaction number",
            SHOW_DEADLINE,
            "const t = document.getElementById('trade-result').textContent;
             return t.includes('transaction number') ? t : null;",
        )
        .await;
    let result = result.as_str().expect("text");
    assert!(result.starts_with("Bought 3 FishCo"), "{result}");
    let number: u64 = result
        .trim_end_matches('.')
        .rsplit(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a number in {result:?}"));
    let (status, order) = api.get(&format!("/orders/{number}")).await;
    assert_eq!(status, 200);
    assert_eq!(
        order["data"],
        json!({"number": number, "name": "FishCo", "type": "buy", "quantity": 3})
    );

    phase!("both pages show the new quantity");
    let traded = Instant::now();
    wait_quantity(&first, "FishCo", before - 3, "this page shows the trade").await;
    wait_quantity(
        &second,
        "FishCo",
        before - 3,
        "the other page shows the trade",
    )
    .await;
    eprintln!("both pages updated {:?} after the reply", traded.elapsed());

    phase!("an order lookup on the second page, with the keyboard");
    second.click(&second.find("#lookup-number").await).await;
    second.keys(&format!("{number}{}", key::ENTER)).await;
    second
        .wait_for(
            "the lookup shows the order",
            SHOW_DEADLINE,
            &format!(
                "return document.getElementById('lookup-result').textContent
                    === 'Order {number}: buy 3 FishCo.'"
            ),
        )
        .await;

    phase!("refusals read as errors on the page: an unknown order, too large a buy");
    second
        .execute(
            "document.getElementById('lookup-number').value = ''",
            vec![],
        )
        .await;
    second.click(&second.find("#lookup-number").await).await;
    second.keys(&format!("999999{}", key::ENTER)).await;
    second
        .wait_for(
            "the lookup says not found",
            SHOW_DEADLINE,
            "return document.getElementById('lookup-result').textContent.startsWith('Not found (404)')",
        )
        .await;
    first
        .execute(
            "document.getElementById('trade-quantity').value = '100000';
             document.getElementById('trade-submit').click();",
            vec![],
        )
        .await;
    first
        .wait_for(
            "the form says refused",
            SHOW_DEADLINE,
            "return document.getElementById('trade-result').textContent.startsWith('Refused (409)')",
        )
        .await;

    phase!("no layout jumps, no console errors beyond the two refusals asked for");
    for (name, page) in [("first", &first), ("second", &second)] {
        let shift = layout_shift(page).await;
        eprintln!("{name} page: cumulative layout shift {shift}");
        assert!(shift < 0.01, "{name} page moved: layout shift {shift}");
        assert_clean_console(
            name,
            &page.browser_log().await,
            &[
                "/orders/999999",
                "/orders - Failed to load resource: the server responded with a status of 409",
            ],
        );
    }
    first.quit().await;
    second.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium and chromedriver: .ci/browser runs them"]
async fn the_page_fits_a_desktop_and_a_phone_and_every_panel_shows_live_data() {
    let system = System::start().await;
    let base = system.url(Role::Frontend, None);
    let driver = Driver::start().await;
    let page = driver.session(DESKTOP.0, DESKTOP.1).await;
    page.goto(&format!("{base}/")).await;
    page.wait_for(
        "the page is live",
        SHOW_DEADLINE,
        "return document.getElementById('connection').textContent === 'live'",
    )
    .await;

    phase!("load from `bazaar client` for a few seconds: lookups, trades, order queries");
    let client = tokio::process::Command::new(crate::support::exe())
        .args([
            "client",
            "--frontend",
            &base,
            "--clients",
            "3",
            "--duration",
            "6s",
        ])
        .args(["--p", "0.5", "--seed", "13"])
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(90), client)
        .await
        .expect("the client finishes")
        .expect("the client runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    page.wait_for(
        "every chart has data",
        SHOW_DEADLINE,
        "return ['#spark-trades', '#spark-lookups', '#spark-queries', '#spark-hits', '#spark-misses']
            .every((id) => !document.querySelector(id + ' .spark-value').textContent.endsWith('max 0'))
            && document.querySelector('#latency-trade').cells[1].textContent !== '0';",
    )
    .await;

    phase!("every panel has its data: cluster rows with words, cache entries, latency");
    let summary = page
        .execute(
            "const rows = Array.from(document.querySelectorAll('#services tbody tr'));
             return {
               services: rows.map((r) => r.cells[0].textContent),
               health: rows.map((r) => r.cells[6].textContent),
               roles: rows.map((r) => r.cells[2].textContent),
               leader: document.getElementById('leader-summary').textContent,
               entries: document.querySelectorAll('#cache-entries li').length,
               p50: document.querySelector('#latency-trade').cells[2].textContent,
             };",
            vec![],
        )
        .await;
    assert_eq!(
        summary["services"],
        json!([
            "frontend",
            "order-1",
            "order-2",
            "order-3",
            "catalog-1",
            "catalog-2"
        ]),
        "{summary}"
    );
    assert_eq!(
        summary["health"],
        json!(vec!["\u{2713} up"; 6]),
        "health in words"
    );
    assert_eq!(
        summary["roles"],
        json!([
            "front-end",
            "follower",
            "follower",
            "leader",
            "catalog",
            "catalog"
        ]),
        "roles in words"
    );
    assert_eq!(summary["leader"], "leader: order-3 (epoch 1)");
    assert!(summary["entries"].as_u64() > Some(0), "{summary}");
    assert!(
        summary["p50"].as_str().is_some_and(|t| t.ends_with('s')),
        "{summary}"
    );

    for (label, (width, height)) in [("desktop", DESKTOP), ("phone", PHONE)] {
        phase!("{label} window {width}x{height}: no horizontal scrolling, every panel in view");
        page.set_viewport(width, height).await;
        let fit = page
            .wait_for(
                "the layout settles",
                SHOW_DEADLINE,
                "const d = document.documentElement;
                 const wide = Array.from(document.querySelectorAll('.panel, table, .box, form'))
                     .filter((e) => e.getBoundingClientRect().right > d.clientWidth + 0.5)
                     .map((e) => e.id || e.className);
                 return d.scrollWidth <= d.clientWidth ? {width: d.clientWidth, wide} : null;",
            )
            .await;
        assert_eq!(
            fit["wide"],
            json!([]),
            "{label}: wider than the window: {fit}"
        );
        let panels = page
            .execute(
                "return ['market', 'cluster', 'cache', 'traffic'].map((id) => {
                    const r = document.getElementById(id).getBoundingClientRect();
                    return r.width > 200 && r.height > 200;
                 });",
                vec![],
            )
            .await;
        assert_eq!(panels, json!([true, true, true, true]), "{label}");
        if screenshot_dir().is_some() {
            // A window as tall as the page, so no panel is cut at the bottom of the viewport.
            let full = page
                .execute("return document.documentElement.scrollHeight", vec![])
                .await
                .as_u64()
                .and_then(|h| u32::try_from(h).ok())
                .expect("page height");
            page.set_viewport(width, full).await;
            if label == "desktop" {
                for id in ["market", "cluster", "cache", "traffic"] {
                    let panel = page.find(&format!("#{id}")).await;
                    save(&format!("{id}.png"), &page.element_screenshot(&panel).await);
                }
                save("dashboard.png", &page.screenshot().await);
            } else {
                save("phone.png", &page.screenshot().await);
            }
        }
    }
    page.set_viewport(DESKTOP.0, DESKTOP.1).await;
    let shift = layout_shift(&page).await;
    eprintln!("cumulative layout shift {shift}");
    assert_clean_console("the page", &page.browser_log().await, &[]);
    page.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium and chromedriver: .ci/browser runs them"]
async fn with_demo_killing_the_leader_from_the_page_shows_the_new_leader_within_seconds() {
    let up = Up::start(&["--demo"]).await;
    let base = up.url(Role::Frontend, None);
    let driver = Driver::start().await;
    let page = driver.session(DESKTOP.0, DESKTOP.1).await;
    page.goto(&format!("{base}/")).await;

    phase!("the page names order-3 the leader and offers to kill it");
    page.wait_for(
        "order-3 leads and can be killed",
        SHOW_DEADLINE,
        "return document.getElementById('leader-summary').textContent === 'leader: order-3 (epoch 1)'
            && Array.from(document.querySelectorAll('#services button'))
                .some((b) => b.dataset.service === 'order-3' && b.textContent === 'Kill');",
    )
    .await;

    phase!("click Kill on the leader's row");
    let kill = page
        .find("#services button[data-service=\"order-3\"]")
        .await;
    let clicked = Instant::now();
    page.click(&kill).await;
    let leader = page
        .wait_for(
            "the page shows a new leader",
            Duration::from_secs(10),
            "const t = document.getElementById('leader-summary').textContent;
             return /^leader: order-[12] /.test(t) ? t : null;",
        )
        .await;
    let took = clicked.elapsed();
    eprintln!("new leader shown {took:?} after the click: {leader}");
    let changes = page
        .execute(
            "return document.getElementById('leader-changes').textContent",
            vec![],
        )
        .await;
    assert!(
        changes
            .as_str()
            .is_some_and(|t| t.contains("order-3 \u{2192} order-2")),
        "the change is listed: {changes}"
    );
    page.wait_for(
        "order-3 shows as down, in words",
        SHOW_DEADLINE,
        "const row = Array.from(document.querySelectorAll('#services tbody tr'))
            .find((r) => r.cells[0].textContent === 'order-3');
         return row && row.cells[6].textContent === '\u{2717} down'
            && row.querySelector('button').textContent === 'Restart';",
    )
    .await;

    phase!("trade on the new leader, then restart order-3 from the page: it catches up");
    let api = crate::support::Api::new(base.clone());
    for _ in 0..3 {
        api.trade("BoarCo", "buy", 1)
            .await
            .expect("trade on the new leader");
    }
    page.click(
        &page
            .find("#services button[data-service=\"order-3\"]")
            .await,
    )
    .await;
    page.wait_for(
        "order-3 is back as a follower with nothing missing",
        Duration::from_secs(30),
        "const row = Array.from(document.querySelectorAll('#services tbody tr'))
            .find((r) => r.cells[0].textContent === 'order-3');
         return row && row.cells[6].textContent === '\u{2713} up'
            && row.cells[2].textContent === 'follower' && row.cells[5].textContent === '0';",
    )
    .await;
    save(
        "cluster-failover.png",
        &page.element_screenshot(&page.find("#cluster").await).await,
    );
    assert_clean_console("the page", &page.browser_log().await, &[]);
    page.quit().await;
    assert!(up.stop().await, "up exits 0");
}
